"""The overhead and reflection benches run at a toy size and write what they promise (not timed tests)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "overhead.json"
    env = dict(os.environ, LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/bench_overhead.py"), *args, "--threads", "1", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_bench_overhead_forced_answers(tmp_path, tiny_cache):
    """--answer-tokens: every answer that long, reflections their own length, B = 1 and B = 2, staleness 0 and 1,
    each item's time split and the ratio line last."""
    result, stdout = _bench(tmp_path, "--items", "4", "--block", "2", "--answer-tokens", "10")
    models = result["models"]
    assert result["items"] == 4 and result["answer_tokens"] == 10
    assert set(models) == {"Base", "EchoSafe", "Base@B2", "EchoSafe@B2", "EchoSafe@B2/no-prefetch", "EchoSafe@B2/s1"}
    for label, row in models.items():
        assert row["per_item"]["answer_tokens"] == 10, label
    assert models["Base"]["inner_calls_per_item"] == {"generate_turns": 1.0}  # one single-request call per item
    echo = models["EchoSafe"]
    assert echo["inner_calls_per_item"] == {"start_batch": 1.0, "extend_batch": 1.0}
    # one reflection per item, its fixed labels written with fewer forward passes than tokens (jump-forward)
    assert 0 < echo["per_item"]["follow_up_forwards"] < echo["per_item"]["follow_up_tokens"]
    assert set(echo["parts_mean_s"]) == {"embed", "retrieve", "answer", "reflect", "store"}
    assert models["EchoSafe@B2"]["inner_calls_per_item"] == {"start_batch": 0.5, "extend_batch": 0.5}
    # pipelined: the second block's answers carry the first block's reflections; the last block's are flushed
    piped = models["EchoSafe@B2/s1"]
    assert piped["staleness"] == 1
    assert piped["inner_calls_per_item"] == {"start_batch": 0.25, "start_and_extend": 0.25, "extend_batch": 0.25}
    assert piped["per_item"]["follow_up_tokens"] > 0 and piped["flush_wall_s"] > 0
    assert "steady_ratio_vs_base_same_batch_wall" in piped
    assert stdout.strip().splitlines()[-1].startswith("EchoSafe@B2 / Base@B2: ")
    # the model-independent split: its parts add up to the row's time, the printed line is their sum
    split = models["EchoSafe@B2"]["split_mean_s"]
    assert split["key_text"] > 0 and split["key_image"] >= 0
    assert sum(
        split[k] for k in ("key_text", "key_image", "retrieve", "answer", "reflect", "store", "bookkeeping")
    ) == (pytest.approx(models["EchoSafe@B2"]["s_per_item_wall_mean"]))
    line = next(x for x in stdout.splitlines() if x.startswith("model-independent overhead per item: "))
    assert float(line.split(": ")[1].split()[0]) == pytest.approx(1000 * split["model_independent"], abs=0.01)
    assert result["key_embedding_side_by_side"]["packed_ms"] > 0
    # the next block's text keys encoded ahead: the same answers, retrievals and insights as without the hint
    assert models["EchoSafe@B2"]["prefetch"] and not models["EchoSafe@B2/no-prefetch"]["prefetch"]
    assert result["prefetch_outputs_identical"] is True
    assert models["EchoSafe@B2"]["key_text_compute_mean_s"] > 0
    assert "outputs identical with and without prefetch: True" in stdout
    assert result["counts"]["question_minilm_tokens"] > 0 and result["counts"]["images_per_item"] == 1


def test_bench_overhead_every_defense_at_its_own_length(tmp_path, tiny_cache):
    result, _ = _bench(tmp_path, "--items", "2", "--block", "2", "--defenses", "EchoSafe", "ECSO", "--no-staleness")
    models = result["models"]
    assert set(models) == {"Base", "EchoSafe", "ECSO", "Base@B2", "EchoSafe@B2", "EchoSafe@B2/no-prefetch"}
    assert models["ECSO"]["inner_calls_per_item"]["generate_turns"] >= 2
    assert all(m["per_item"]["answer_tokens"] > 0 for m in models.values())


def test_bench_reflection_same_tokens_fewer_passes(tmp_path, tiny_cache):
    """bench_reflection: both decodings of the reflection write the same text, jump-forward in fewer passes."""
    out = tmp_path / "reflection.json"
    env = dict(os.environ, LMUData=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/bench_reflection.py"), "--items", "2", "--block", "2"]
        + ["--answer-tokens", "6", "--threads", "1", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["reflections_equal"] == "2/2"
    ways = result["ways"]
    assert ways["jump-forward"]["tokens_per_item"] == ways["one token per pass"]["tokens_per_item"] > 0
    assert ways["jump-forward"]["forwards_per_block"] < ways["one token per pass"]["forwards_per_block"]
