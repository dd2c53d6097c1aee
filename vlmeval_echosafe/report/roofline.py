"""A roofline ESTIMATE of GPU time per micro-batch, EchoSafe against the bare model, at a real model shape.

Each forward pass takes ``max(FLOPs / peak, bytes / bandwidth)``: the FLOPs of :mod:`.flops` for the pass's rows,
and the bytes it must read from HBM, the weights once per pass (bf16: 2 bytes per parameter, LM head included)
plus every row's KV cache (2 tensors x layers x kv_heads x head_dim x 2 bytes per cached position). A decode step
at batch B is one pass over B rows; a prefill is one pass over all prompt tokens of the micro-batch. The vision tower
and the key encoder are one pass each. Peaks and bandwidths come from ``task_configs/gpu_profiles.yaml``; real
kernels reach a fraction of both, and the host's own time (retrieval, store, bookkeeping) is left out unless
``--host-ms`` is given, so the ratio is the GPU-bound part of a real run, not a measurement.

``staleness: 1`` decodes a micro-batch's reflections in the same passes as the next one's answers: those passes read
the weights once for both (2B rows), and only the reflection's prefill stays a pass of its own. The reflection's
passes per micro-batch are the bench's measured ones (jump-forward writes the form's labels without a pass each).

    python -m vlmeval_echosafe.report.roofline --gpu h100 --model Qwen2.5-VL-7B --batch 8 --answer-tokens 256
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..paths import config_file
from .flops import Model, Transformer, Workload, load_shapes, workloads

GPUS_FILE = "task_configs/gpu_profiles.yaml"
DEFAULT_BENCH = "benchmarks/results/overhead_cpu_256.json"
BYTES = 2  # bf16


@dataclass(frozen=True)
class Gpu:
    name: str
    bf16_flops: float
    hbm_bytes_per_s: float
    source: str


def load_gpus(path: Path | None = None) -> dict[str, Gpu]:
    """GPU profiles by key (YAML reads ``989.4e12`` as a string: the numbers are converted here)."""
    raw = yaml.safe_load((path or config_file(GPUS_FILE)).read_text())
    return {
        key: Gpu(spec["name"], float(spec["bf16_flops"]), float(spec["hbm_bytes_per_s"]), spec["source"])
        for key, spec in raw["gpus"].items()
    }


def _weights(t: Transformer) -> float:
    return BYTES * (t.params + t.hidden * t.vocab)  # the LM head is read every pass; embedding rows barely


def _kv(t: Transformer, positions: float) -> float:
    return BYTES * 2 * t.layers * t.kv_heads * t.head_dim * positions


def _pass(gpu: Gpu, flops: float, nbytes: float) -> float:
    return max(flops / gpu.bf16_flops, nbytes / gpu.hbm_bytes_per_s)


def _decode(gpu: Gpu, t: Transformer, rows: list[tuple[int, float, float]], passes: float) -> float:
    """Seconds for ``passes`` decode passes over row groups ``(rows, cached positions at the start, tokens each row
    writes over those passes)``: one token per pass for an answer, more for a reflection (jump-forward)."""
    total = 0.0
    for s in range(int(round(passes))):
        flops = kv = 0.0
        for count, start, tokens in rows:
            step = tokens / passes
            ctx = start + s * step
            flops += count * (t.forward(step, ctx) + t.lm_head(1))
            kv += _kv(t, count * ctx)
        total += _pass(gpu, flops, _weights(t) + kv)
    return total


def phases(
    gpu: Gpu, model: Model, encoder: Transformer, w: Workload, batch: int, reflect_passes: float, staleness: int = 0
) -> dict[str, float]:
    """Seconds per micro-batch of ``batch`` items, by phase (``reflect_passes``: decode passes of one micro-batch's
    reflection)."""
    t, b = model.text, batch
    prompt = w.images * model.vision.tokens_per_image + w.prompt_text + w.added_text
    out = {
        "key_encoder": _pass(gpu, b * encoder.forward(w.key_text, causal=False), BYTES * encoder.params)
        if w.key_text
        else 0.0,
        "vision": _pass(gpu, b * w.images * model.vision.per_image(), 0.0),
        "answer_prefill": _pass(gpu, b * t.forward(prompt), _weights(t) + _kv(t, b * prompt)),
        "answer_decode": _decode(gpu, t, [(b, prompt, w.answer)], w.answer),
    }
    if not w.reflect_prompt:
        return out
    cached = prompt + w.answer
    out["reflect_prefill"] = _pass(gpu, b * t.forward(w.reflect_prompt, cached), _weights(t) + _kv(t, b * cached))
    reflection = (b, cached + w.reflect_prompt, w.reflect)
    if staleness:  # its passes are the next micro-batch's first answer passes: only the rows it adds cost time
        answers = (b, prompt, reflect_passes)
        both = _decode(gpu, t, [answers, reflection], reflect_passes)
        out["reflect_decode"] = both - _decode(gpu, t, [answers], reflect_passes)
    else:
        out["reflect_decode"] = _decode(gpu, t, [reflection], reflect_passes)
    return out


def estimate(bench: dict, gpu: Gpu, model: Model, encoder: Transformer, batch: int, answer_tokens: int) -> dict:
    """Base and EchoSafe (staleness 0 and 1) seconds per micro-batch by phase, and the ratios."""
    loads = workloads(bench)
    rows = bench["models"]
    echo_label = next((k for k in rows if k.startswith("EchoSafe@B") and "/" not in k), "EchoSafe")
    per_item = rows[echo_label]["per_item"]["follow_up_forwards"]
    reflect_passes = per_item * rows[echo_label].get("batch", 1)  # one micro-batch's reflection passes, as measured
    base = phases(gpu, model, encoder, replace(loads["Base"], answer=answer_tokens), batch, 0)
    echo = replace(loads["EchoSafe"], answer=answer_tokens)
    out = {"Base": base, "EchoSafe": phases(gpu, model, encoder, echo, batch, reflect_passes)}
    out["EchoSafe/s1"] = phases(gpu, model, encoder, echo, batch, reflect_passes, staleness=1)
    return {"phases_s": out, "reflect_passes": reflect_passes}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Roofline ESTIMATE of EchoSafe@B / Base@B GPU time at a real shape")
    ap.add_argument("--gpu", default="h100", help=f"a key of {GPUS_FILE}")
    ap.add_argument("--model", default="Qwen2.5-VL-7B", help="a key of task_configs/model_shapes.yaml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--answer-tokens", type=int, default=256)
    ap.add_argument("--bench", default=DEFAULT_BENCH, help="overhead bench JSON with the per-item token counts")
    ap.add_argument("--host-ms", type=float, default=0.0, help="host time per item added to EchoSafe (e.g. measured)")
    ap.add_argument("--json", default=None, help="also write the estimate here")
    args = ap.parse_args(argv)
    gpus = load_gpus()
    models, encoder = load_shapes()
    for flag, key, known in (("--gpu", args.gpu, gpus), ("--model", args.model, models)):
        if key not in known:
            raise SystemExit(f"{flag} {key}: unknown; known: {', '.join(known)}")
    gpu, model = gpus[args.gpu], models[args.model]
    bench = json.loads(Path(args.bench).read_text())
    result = estimate(bench, gpu, model, encoder, args.batch, args.answer_tokens)
    totals = {row: sum(p.values()) for row, p in result["phases_s"].items()}
    host = args.host_ms / 1000 * args.batch
    print(
        f"ESTIMATE (roofline, not a measurement): {gpu.name}, {model.name}, batch {args.batch}, "
        f"{args.answer_tokens}-token answers, host time per item {args.host_ms} ms"
    )
    for row, parts in result["phases_s"].items():
        print(f"  {row:12s} " + ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in parts.items()))
    b = args.batch
    ratios = {
        "staleness_0": (totals["EchoSafe"] + host) / totals["Base"],
        "staleness_1": (totals["EchoSafe/s1"] + host) / totals["Base"],
    }
    print(f"ESTIMATE EchoSafe@B{b} / Base@B{b} (staleness 0): {ratios['staleness_0']:.3f}")
    print(f"ESTIMATE EchoSafe@B{b} / Base@B{b} (staleness 1): {ratios['staleness_1']:.3f}")
    if args.json:
        record = {
            "estimate": True,
            "gpu": args.gpu,
            "model": args.model,
            "batch": b,
            "answer_tokens": args.answer_tokens,
            "host_ms_per_item": args.host_ms,
            "ratios": ratios,
            **result,
        }
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
