"""The retrieval benchmark runs end to end at toy sizes and writes the JSON the docs' table is built from."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_retrieval_tiny(tmp_path) -> None:
    out = tmp_path / "retrieval.json"
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_retrieval.py"),
            "--sizes",
            "1000",
            "2000",
            "--dim",
            "32",
            "--queries",
            "20",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t < 20
    report = json.loads(out.read_text())
    assert report["config"]["measure_threads"] == 1 and report["config"]["dim"] == 32
    assert [r["n"] for r in report["results"]] == [1000, 2000]
    for r in report["results"]:
        assert set(r) >= {"n", "dim", "exact", "approx", "faiss_exact_vs_numpy"}
        assert set(r["exact"]) >= {"p50_ms", "p99_ms", "insert_per_s"}
        assert set(r["approx"]) >= {
            "index",
            "nlist",
            "nprobe",
            "p50_ms",
            "p99_ms",
            "recall_at_5",
            "insert_per_s",
            "switch_s",
            "nprobe_sweep",
        }
        assert r["approx"]["index"] == "IndexIVFFlat"
        assert set(r["faiss_exact_vs_numpy"]) == {"faiss_p50_ms", "numpy_p50_ms", "numpy_over_faiss"}
        for block in (r["exact"], r["approx"]):
            assert 0 < block["p50_ms"] <= block["p99_ms"] and block["insert_per_s"] > 0
        for row in r["approx"]["nprobe_sweep"]:
            assert 0.0 <= row["recall_at_5"] <= 1.0
        assert r["faiss_exact_vs_numpy"]["numpy_over_faiss"] > 0
    assert "recall@5" in proc.stdout
