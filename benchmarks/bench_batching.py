"""Items per second of micro-batched EchoSafe at B = 1, 4, 8, 16 against the host's per-sample loop, same inner
model and same items, measured side by side in one process.

"host loop" is what VLMEvalKit's `infer_data` does for a local model: one `model.generate(message)` per item.
"B=N" is what `run.py --batch-size N` does: one micro-batch of N items per call of the defense (`generate_batch`
of the plugin's model class, `respond` of the core defense), the stream flushed at its end. Every
configuration starts from an empty memory, and repeats go round all configurations in turn (starting at a
different one each time), so machine noise hits all of them. Base (the bare inner model) runs the same way, for
the EchoSafe / Base ratio at each size. Also written: generated tokens per item, and how many predictions equal
the host loop's (Base's must all be equal; EchoSafe's may differ for B > 1, where an item does not see the
insights of earlier items in its own batch).

    python benchmarks/bench_batching.py --items 48 --out benchmarks/results/batching_cpu_tiny.json
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

from demo_items import as_host_model, base_model, hand_off, inner_and_items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="benchmarks/results/batching_cpu_tiny.json")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from vlmeval_echosafe.catalog import defense_entries, defense_settings
    from vlmeval_echosafe.core.inner import adapt
    from vlmeval_echosafe.echosafe import EchoSafe

    inner, dataset, messages = inner_and_items(args.inner, args.items)
    if not adapt(inner).batched:
        raise SystemExit(f"{args.inner} does not decode in batches; pick a model the plugin runs itself")
    entries, extra = defense_entries()
    settings = defense_settings(EchoSafe, entries["EchoSafe"], extra, args.inner, "plugin")
    root = Path(tempfile.mkdtemp())
    configs = [("host loop", None)] + [(f"B={b}", b) for b in args.sizes]

    def run(kind: str, label: str, size: int | None, rep: int) -> tuple[float, list[str], int]:
        if kind == "EchoSafe":  # a fresh, empty memory for every run
            model = as_host_model(
                EchoSafe, inner, name="EchoSafe_bench", run_dir=root / f"{label}-{rep}", settings=settings
            )
        else:
            model = base_model(inner, "Base_bench", root / f"base-{label}-{rep}")
        hand_off(model, dataset)
        tokens = inner.tokens_generated
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        if size is None:
            out = [model.generate(m, dataset=dataset.dataset_name) for m in messages]
        else:
            out = []
            for start in range(0, len(messages), size):
                out += model.generate_batch(messages[start : start + size], dataset=dataset.dataset_name)
            model.flush()  # the end of the stream, as the runner's loop ends it
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t, out, inner.tokens_generated - tokens

    for kind in ("Base", "EchoSafe"):  # warm-up: weights, encoders, first allocations
        run(kind, "warmup", 2, -1)
    seconds: dict[tuple[str, str], list[float]] = {}
    preds: dict[tuple[str, str], list[str]] = {}
    tokens: dict[tuple[str, str], int] = {}
    load_before = os.getloadavg()
    for rep in range(args.repeats):
        order = configs[rep % len(configs) :] + configs[: rep % len(configs)]  # no configuration always first
        for kind in ("Base", "EchoSafe"):
            for label, size in order:
                s, out, n_tok = run(kind, label, size, rep)
                seconds.setdefault((kind, label), []).append(s)
                preds[(kind, label)], tokens[(kind, label)] = out, n_tok

    n = len(messages)
    result: dict = {
        "bench": "batching",
        "inner": args.inner,
        "items": n,
        "repeats": args.repeats,
        "device": str(inner.model.device),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "runs": {},
    }
    for kind in ("Base", "EchoSafe"):
        host_ips = n / statistics.median(seconds[(kind, "host loop")])
        for label, _ in configs:
            ips = n / statistics.median(seconds[(kind, label)])
            same = sum(a == b for a, b in zip(preds[(kind, label)], preds[(kind, "host loop")], strict=True))
            result["runs"][f"{kind} {label}"] = {
                "items_per_s": round(ips, 3),
                "speedup_vs_host_loop": round(ips / host_ips, 3),
                "seconds_per_run": [round(x, 3) for x in seconds[(kind, label)]],
                "generated_tokens_per_item": round(tokens[(kind, label)] / n, 2),
                "predictions_equal_to_host_loop": f"{same}/{n}",
            }
    for label, _ in configs:
        echo, base = result["runs"][f"EchoSafe {label}"], result["runs"][f"Base {label}"]
        echo["time_ratio_vs_base_same_batching"] = round(base["items_per_s"] / echo["items_per_s"], 3)
        echo["time_ratio_vs_base_host_loop"] = round(
            result["runs"]["Base host loop"]["items_per_s"] / echo["items_per_s"], 3
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["runs"].items():
        extra_cols = (
            f"  EchoSafe/Base x{r['time_ratio_vs_base_same_batching']:.2f} (vs Base host loop "
            f"x{r['time_ratio_vs_base_host_loop']:.2f})"
            if "time_ratio_vs_base_same_batching" in r
            else ""
        )
        print(
            f"{name:20s} {r['items_per_s']:8.2f} items/s  x{r['speedup_vs_host_loop']:.2f} vs host loop  "
            f"same preds {r['predictions_equal_to_host_loop']}{extra_cols}"
        )


if __name__ == "__main__":
    main()
