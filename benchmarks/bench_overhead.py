"""Every defense's per-item cost against the bare inner model, measured side by side in one process.

One inner model object, the same items for all: blocks of items go round Base and each defense in turn, so
machine noise hits all of them. With ``--batch B`` (default 8) Base and EchoSafe also run micro-batched, one
block of B items per call (rows ``Base@B8``, ``EchoSafe@B8``). Writes JSON with per-item wall times, the ratio to
Base (one at a time), the inner-model calls and generated tokens per item, and EchoSafe's time split from its
trace.

    python benchmarks/bench_overhead.py --items 49 --out benchmarks/results/overhead_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from demo_items import hand_off, inner_and_items

COUNTED = ("generate", "start_batch", "extend_batch")


def count_calls(model, counter: Counter) -> None:
    """Wrap the inner model's entry points so every call is counted under the active label."""
    for name in COUNTED:
        method = getattr(model, name, None)
        if method is None:
            continue

        def wrapped(*args, _m=method, _n=name, **kwargs):
            counter[(counter["_active"], _n)] += 1
            return _m(*args, **kwargs)

        setattr(model, name, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=49)
    ap.add_argument("--block", type=int, default=8, help="items per block; also the micro-batch size")
    ap.add_argument("--no-batch", action="store_true", help="leave out the micro-batched rows")
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--defenses", nargs="*", default=None, help="names from wrappers/defenses.yaml (default: all)")
    ap.add_argument("--out", default="benchmarks/results/overhead_cpu_tiny.json")
    args = ap.parse_args()

    from vlmeval_echosafe.registry import _class, defense_entries, defense_settings

    inner, dataset, messages = inner_and_items(args.inner, args.items)
    entries, extra = defense_entries()
    names = args.defenses or [n for n in entries if "-" not in n or n.startswith("AdaShield")]
    run_dir = Path(tempfile.mkdtemp())
    models = {"Base": inner}
    batched: set[str] = set()
    for name in names:
        cls = _class(entries[name]["class"], "wrappers/defenses.yaml")
        settings = defense_settings(cls, entries[name], extra, args.inner, plugin=True)
        models[name] = cls(inner, name=f"{name}_{args.inner}", run_dir=run_dir / name, settings=settings)
        if name == "EchoSafe" and not args.no_batch:
            label = f"EchoSafe@B{args.block}"
            models[label] = cls(inner, name=f"{name}_{args.inner}", run_dir=run_dir / label, settings=settings)
            batched.add(label)
    if not args.no_batch and getattr(inner, "supports_batch", False):
        models[f"Base@B{args.block}"] = inner
        batched.add(f"Base@B{args.block}")
    calls: Counter = Counter()
    count_calls(inner, calls)
    for model in models.values():
        hand_off(model, dataset)
        calls["_active"] = "warmup"
        model.generate(messages[0], dataset=dataset.dataset_name)  # model load, encoders, first allocations

    times: dict[str, list[float]] = {label: [] for label in models}
    tokens: Counter = Counter()
    for start in range(1, len(messages), args.block):
        for label, model in models.items():
            calls["_active"] = label
            block = messages[start : start + args.block]
            before = getattr(inner, "tokens_generated", 0)
            if label in batched:  # one call for the block; each item gets an equal share of its time
                t = time.perf_counter()
                model.generate_batch(block, dataset=dataset.dataset_name)
                times[label] += [(time.perf_counter() - t) / len(block)] * len(block)
            else:
                for msg in block:
                    t = time.perf_counter()
                    model.generate(msg, dataset=dataset.dataset_name)
                    times[label].append(time.perf_counter() - t)
            tokens[label] += getattr(inner, "tokens_generated", 0) - before

    n = len(times["Base"])
    base_total = sum(times["Base"])
    per_model = {
        label: {
            "s_per_item_median": statistics.median(ts),
            "ratio_total_vs_base": sum(ts) / base_total,
            "inner_calls_per_item": {c: calls[(label, c)] / n for c in COUNTED if calls[(label, c)]},
            "generated_tokens_per_item": tokens[label] / n,
        }
        for label, ts in times.items()
    }
    echo = [m for m in names if entries[m]["class"] == "EchoSafe"]
    for label in (*echo[:1], *(b for b in batched if b.startswith("EchoSafe"))):
        trace_path = run_dir / label / f"{echo[0]}_{args.inner}_{dataset.dataset_name}_echosafe_trace.jsonl"
        trace = [json.loads(x) for x in trace_path.read_text().splitlines()][1:]
        # batched parts are each item's equal share of the batch's call
        per_model[label]["parts_median_s"] = {
            k: statistics.median(t["timings"].get(k, 0.0) for t in trace)
            for k in ("embed", "retrieve", "answer", "reflect", "store")
        }
        per_model[label]["insights_written"] = sum(t["insight_id"] is not None for t in trace)
    result = {
        "bench": "overhead",
        "inner": args.inner,
        "items": n,
        "block": args.block,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "models": per_model,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for label, r in per_model.items():
        print(
            f"{label:14s} {r['s_per_item_median']:.4f} s/item  x{r['ratio_total_vs_base']:.2f}  "
            f"tokens/item {r['generated_tokens_per_item']:.1f}  calls/item {r['inner_calls_per_item']}"
        )


if __name__ == "__main__":
    main()
