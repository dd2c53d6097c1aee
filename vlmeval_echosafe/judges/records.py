"""Judge every prediction once, keep one JSON line per judgement, and reuse them on the next run.

A record is reused only when its key (judge name, judge version, question, response, label and any input the
judge adds, such as the key phrase) matches, and never when it was ``unknown``: re-running re-asks exactly the
items the judge failed on. Lines are appended and flushed one by one, so a crash loses at most the judgement in
flight and leaves at most a torn last line; the reader drops that one (with a warning) and cuts it off before
appending, and refuses a file with a bad line anywhere else (corruption, not a crash).
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from .base import UNKNOWN, Judge, JudgeItem, Judgement


class JudgeRecordError(ValueError):
    """A judge-record file with a bad line before its last one."""


class TornRecordWarning(UserWarning):
    """The last line of a judge-record file was cut off (a crash while writing) and is ignored."""


def item_from_row(row: Any, response: Any, image: str | None = None) -> JudgeItem:
    """The judge's view of one benchmark row and the model's response; a missing response (NaN / None) becomes ""
    so every harness counts it as the same ``unknown``."""
    missing = response is None or (not isinstance(response, str) and bool(pd.isna(response)))
    text = "" if missing else str(response)
    phrase = row.get("key_phrase") if hasattr(row, "get") else None
    phrase = "" if phrase is None or (not isinstance(phrase, str) and bool(pd.isna(phrase))) else str(phrase)
    return JudgeItem(str(row["index"]), str(row["question"]), text, row["label"], phrase, image)


def record_key(name: str, version: str, item: JudgeItem, extra: Sequence[str] = ()) -> str:
    payload = json.dumps([name, version, item.question, item.response, item.label, *extra])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def judge_key(judge: Judge, item: JudgeItem) -> str:
    return record_key(judge.name, judge.version, item, judge.key_extra(item))


def _scan(path: Path) -> tuple[dict[str, dict], int]:
    """Records by key (later lines win) and the byte length of the file up to the end of its last whole record."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    out: dict[str, dict] = {}
    offset = good_end = 0
    for i, raw in enumerate(lines):
        end = offset + len(raw) + (1 if i < len(lines) - 1 else 0)
        if raw.strip():
            try:
                rec = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                rec = None
            if not (isinstance(rec, dict) and "key" in rec and "decision" in rec):
                if i == last:
                    warnings.warn(
                        f"{path}: line {i + 1} is cut off (a crash while writing?); ignored, that item is judged again",
                        TornRecordWarning,
                        stacklevel=3,
                    )
                    break
                raise JudgeRecordError(
                    f"{path}: line {i + 1} of {last + 1} is not a judge record ({raw[:80]!r}); only a cut-off last "
                    "line is expected after a crash. Fix or delete that line (deleting the file re-judges everything)."
                )
            out[rec["key"]] = rec
        good_end = offset = end
    return out, good_end


def load_records(path: Path) -> dict[str, dict]:
    """Earlier judgements by key; a missing file is empty (see ``_scan`` for the torn-line rule)."""
    return _scan(path)[0] if path.exists() else {}


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1)


def judge_all(judge: Judge, items: Sequence[JudgeItem], path: Path, nproc: int = 4) -> list[Judgement]:
    """Judgements for ``items`` in order, asking the judge only for what ``path`` does not already hold."""
    cached, good_end = _scan(path) if path.exists() else ({}, 0)
    keys = [judge_key(judge, it) for it in items]
    results: list[Judgement | None] = [None] * len(items)
    todo = []
    for i, key in enumerate(keys):
        rec = cached.get(key)
        if rec is not None and rec["decision"] != UNKNOWN:
            results[i] = Judgement(rec["decision"], rec["score"], rec.get("raw", ""), rec.get("error"))
        else:
            todo.append(i)
    lock = threading.Lock()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size != good_end:
        with path.open("r+b") as fh:  # cut the torn last line off, so the next record starts on a line of its own
            fh.truncate(good_end)
    unterminated = good_end > 0 and _last_byte(path) != b"\n"  # a whole record whose newline was lost
    with path.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc=f"Judge ({judge.name})") as bar:
        if unterminated:
            fh.write("\n")

        def run(i: int) -> None:
            verdict = judge.judge(items[i])
            rec = {
                "key": keys[i],
                "index": items[i].index,
                "label": items[i].label,
                "judge": judge.name,
                "judge_version": judge.version,
                "decision": verdict.decision,
                "score": verdict.score,
                "raw": verdict.raw,
                "error": verdict.error,
            }
            with lock:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()
                results[i] = verdict
                bar.update(1)

        workers = max(1, min(nproc, len(todo))) if judge.refusal_only is False else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, todo))
    return [r for r in results if r is not None]
