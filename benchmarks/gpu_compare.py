"""EchoSafe@B / Base@B measured by bench_overhead beside the roofline ESTIMATE for the same GPU, model and batch.

    python benchmarks/gpu_compare.py --overhead OUT/overhead_cuda_256.json --gpu h100 --model Qwen2.5-VL-7B \
        --out OUT/gpu_ratio_cuda.json

The two are comparable only when the bench ran that model (``comparable`` in the JSON): on a tiny model the
measured ratio is the tiny model's, and the estimate is still the real shape's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vlmeval_echosafe.report.flops import load_shapes
from vlmeval_echosafe.report.roofline import estimate, load_gpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overhead", required=True, help="a bench_overhead JSON (--answer-tokens N)")
    ap.add_argument("--gpu", required=True, help="a key of task_configs/gpu_profiles.yaml")
    ap.add_argument("--model", required=True, help="a key of task_configs/model_shapes.yaml")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    bench = json.loads(Path(args.overhead).read_text())
    rows, block = bench["models"], bench["block"]
    measured = {
        "staleness_0": rows[f"EchoSafe@B{block}"]["ratio_vs_base_same_batch_wall"],
        "staleness_1": rows.get(f"EchoSafe@B{block}/s1", {}).get("ratio_vs_base_same_batch_wall"),
    }
    models, encoder = load_shapes()
    est = estimate(bench, load_gpus()[args.gpu], models[args.model], encoder, block, bench["answer_tokens"] or 256)
    totals = {row: sum(p.values()) for row, p in est["phases_s"].items()}
    estimated = {
        "staleness_0": totals["EchoSafe"] / totals["Base"],
        "staleness_1": totals["EchoSafe/s1"] / totals["Base"],
    }
    record = {
        "measured": {"ratios": measured, "inner": bench["inner"], "gpu": bench["gpu"], "file": args.overhead},
        "estimate": {"ratios": estimated, "gpu_profile": args.gpu, "model": args.model, "batch": block},
        "comparable": bench["inner"] == args.model and bench["gpu"] is not None,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for key in ("staleness_0", "staleness_1"):
        got = measured[key]
        print(
            f"EchoSafe@B{block} / Base@B{block} ({key.replace('_', ' ')}): measured "
            + (f"{got:.3f}" if got is not None else "n/a")
            + f" ({bench['inner']}, {bench['gpu'] or 'no GPU'}),"
            + f" ESTIMATE {estimated[key]:.3f} ({args.model}, {args.gpu})"
        )


if __name__ == "__main__":
    main()
