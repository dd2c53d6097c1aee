"""Roofline estimate: one pass by hand, decoding bound by bandwidth, the command's labelled ratios."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlmeval_echosafe.report.flops import Transformer
from vlmeval_echosafe.report.roofline import Gpu, _decode, _kv, _pass, _weights, load_gpus

REPO = Path(__file__).resolve().parents[1]
T = Transformer(layers=2, hidden=4, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10, mlp="gated")
GPU = Gpu(name="toy", bf16_flops=1000.0, hbm_bytes_per_s=100.0, source="test")


def test_pass_and_decode_by_hand() -> None:
    assert _pass(GPU, 5000.0, 100.0) == 5.0  # compute-bound: 5000 / 1000
    assert _pass(GPU, 10.0, 300.0) == 3.0  # bandwidth-bound: 300 / 100
    assert _weights(T) == 2 * (288 + 40)  # bf16 matmul weights + LM head
    assert _kv(T, 3) == 2 * 2 * 2 * 1 * 2 * 3  # bytes x (k, v) x layers x kv_heads x head_dim x positions
    # two passes of one row, from 1 cached position: each reads the weights and the cache so far
    want = sum(_pass(GPU, T.forward(1, c) + T.lm_head(1), _weights(T) + _kv(T, c)) for c in (1, 2))
    assert _decode(GPU, T, [(1, 1, 2)], 2) == pytest.approx(want)


def test_profiles() -> None:
    gpus = load_gpus()
    assert {"h100", "h200"} <= set(gpus)
    assert gpus["h200"].hbm_bytes_per_s > gpus["h100"].hbm_bytes_per_s


def test_command_prints_labelled_ratios(tmp_path: Path) -> None:
    out = tmp_path / "est.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmeval_echosafe.report.roofline",
            "--gpu",
            "h100",
            "--model",
            "Qwen2.5-VL-7B",
            "--batch",
            "8",
            "--answer-tokens",
            "256",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ESTIMATE (roofline, not a measurement)")
    for staleness in (0, 1):
        assert any(x.startswith(f"ESTIMATE EchoSafe@B8 / Base@B8 (staleness {staleness}): ") for x in lines)
    record = json.loads(out.read_text())
    assert record["estimate"] is True
    # decoding a 7B model is bandwidth-bound: the added prompt and reflection tokens cost little time
    assert 1.0 < record["ratios"]["staleness_1"] <= record["ratios"]["staleness_0"] < 1.5
