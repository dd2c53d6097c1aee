"""EchoSafe's per-item cost against the bare inner model, measured side by side in one process.

Same inner model object, same items: blocks of items alternate between Base and EchoSafe so that machine noise
hits both. Writes JSON with per-item wall times, the ratio EchoSafe/Base and EchoSafe's decomposition
(embed / retrieve / answer / reflect / store, from its trace).

    python benchmarks/bench_overhead.py --items 48 --out benchmarks/results/overhead_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--out", default="benchmarks/results/overhead_cpu_tiny.json")
    args = ap.parse_args()

    os.environ.setdefault("VLMEVALKIT_USE_MODELSCOPE", "0")
    os.environ.setdefault("LMUData", tempfile.mkdtemp())
    from vlmeval.config import supported_VLM
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe import register
    from vlmeval_echosafe.defenses.echosafe import EchoSafe
    from vlmeval_echosafe.registry import defense_entries

    register()
    inner = supported_VLM[args.inner]()
    dataset = build_dataset("MMSafetyBenchPP_Demo")
    rows = [dataset.data.iloc[i] for i in range(min(args.items, len(dataset.data)))]
    messages = [dataset.build_prompt(r) for r in rows]
    defenses, extra = defense_entries()
    settings = {"encoders": extra["encoders"]["plugin"], **defenses["EchoSafe"]["settings"],
                **extra["inner_settings"].get(args.inner, {})}
    run_dir = Path(tempfile.mkdtemp())
    echo = EchoSafe(inner, name=f"EchoSafe_{args.inner}", run_dir=run_dir, settings=settings)
    inner.set_dump_image(dataset.dump_image)
    echo.set_dump_image(dataset.dump_image)
    for model in (inner, echo):  # warm-up: model load, encoders, first-call allocations
        model.generate(messages[0], dataset=dataset.dataset_name)

    times: dict[str, list[float]] = {"base": [], "echosafe": []}
    for start in range(1, len(messages), args.block):
        block = messages[start:start + args.block]
        for key, model in (("base", inner), ("echosafe", echo)):
            for msg in block:
                t = time.perf_counter()
                model.generate(msg, dataset=dataset.dataset_name)
                times[key].append(time.perf_counter() - t)

    trace_path = run_dir / f"EchoSafe_{args.inner}_{dataset.dataset_name}_echosafe_trace.jsonl"
    trace = [json.loads(x) for x in trace_path.read_text().splitlines()][1:]
    parts = {k: statistics.median(t["timings"].get(k, 0.0) for t in trace)
             for k in ("embed", "retrieve", "answer", "reflect", "store")}
    base, echo_t = sum(times["base"]), sum(times["echosafe"])
    result = {
        "bench": "overhead", "inner": args.inner, "items": len(times["base"]), "block": args.block,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "base_s_per_item_median": statistics.median(times["base"]),
        "echosafe_s_per_item_median": statistics.median(times["echosafe"]),
        "ratio_total": echo_t / base,
        "echosafe_parts_median_s": parts,
        "insights_written": sum(t["insight_id"] is not None for t in trace),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
