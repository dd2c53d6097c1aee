"""Trace files: a torn last line (a crash mid-append) is dropped with a warning naming file and line; any other
unreadable line is an error naming file and line, in the writer's resume and in the report's reader alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vlmeval_echosafe.core.trace import TornLineWarning, TraceError, TraceWriter, read_trace
from vlmeval_echosafe.report.traces import load_trace

GOOD = [{"row_index": str(i), "stream": "s", "stream_pos": i, "retrieved": []} for i in range(3)]


def write(path: Path, *tail: str) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in GOOD) + "".join(tail), encoding="utf-8")
    return path


def everything(_: dict) -> bool:
    return True


@pytest.mark.parametrize("reader", [read_trace, load_trace, lambda p: TraceWriter(p, everything).records])
def test_torn_last_line_is_dropped_with_a_warning(tmp_path: Path, reader) -> None:
    path = write(tmp_path / "t.jsonl", '{"row_index": "3", "stream": "s", "retr')
    with pytest.warns(TornLineWarning, match=re.escape(f"{path}: dropped line 4, torn by a crash")):
        out = reader(path)
    assert len(out) == 3


@pytest.mark.parametrize("reader", [read_trace, load_trace, lambda p: TraceWriter(p, everything).records])
@pytest.mark.parametrize(
    ("lines", "bad"),
    [
        (['{"row_index": "3", "str\n', json.dumps(GOOD[0]) + "\n"], 4),  # torn, then written past: not a tail
        (["\n", json.dumps(GOOD[0]) + "\n"], 4),
        (["[1, 2]\n"], 4),  # valid JSON, but not a record: an error even as the last line
    ],
)
def test_any_other_bad_line_is_an_error_naming_file_and_line(tmp_path: Path, reader, lines, bad) -> None:
    path = write(tmp_path / "t.jsonl", *lines)
    before = path.read_text()
    with pytest.raises(TraceError, match=re.escape(f"{path}: line {bad} ")):
        reader(path)
    assert path.read_text() == before  # the resume does not rewrite a damaged trace


def test_resume_rewrites_the_trace_without_the_torn_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"row_ind')
    with pytest.warns(TornLineWarning):
        writer = TraceWriter(path, keep=lambda r: r["row_index"] != "1")
    writer.write({"row_index": "1", "stream": "s"})
    assert [r["row_index"] for r in read_trace(path)] == ["0", "2", "1"]
    assert writer.count("s") == 3
