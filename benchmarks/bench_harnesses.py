"""Items per second of EchoSafe through `run.py --batch-size B` and through `lmms-eval eval --batch_size B`, the
same inner model, items and batch size, measured side by side in one run.

Each configuration is a whole command as a user runs it (a fresh process, fresh work folder, offline), on the
12-item split and on the 144-item demo. Start-up (imports, model load, task build, judging) costs each harness a
fixed time, so two numbers are written per harness and batch size: the whole command's items/s on the demo (what a
user waits for), and the per-item rate of the inference itself, from the difference between the two sizes
((144 - 12) items / (t_144 - t_12)), which cancels the fixed costs. Harnesses alternate within a repeat and each
repeat starts with the other one, so machine load hits both. Also written: the micro-batch sizes each harness
actually handed EchoSafe (from its trace's ``batch.size``), which shows whether the lmms-eval path micro-batches as
``run.py --batch-size`` does.

    python benchmarks/bench_harnesses.py --sizes 1 4 --out benchmarks/results/harnesses_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "MMSafetyBenchPP_DemoMini": ("mmsafetybenchpp_demo_mini", 12),
    "MMSafetyBenchPP_Demo": ("mmsafetybenchpp_demo", 144),
}
HARNESSES = ("run.py", "lmms-eval")


def command(harness: str, variant: str, inner: str, size: int) -> list[str]:
    """The README's command of each harness for ``EchoSafe_<inner>`` at batch size ``size``."""
    if harness == "run.py":
        return [sys.executable, str(REPO / "run.py"), "--data", variant, "--model", f"EchoSafe_{inner}", "--judge",
                "rule", "--batch-size", str(size)]  # fmt: skip
    task = VARIANTS[variant][0]
    return [str(Path(sys.executable).with_name("lmms-eval")), "eval", "--model", "echosafe", "--model_args",
            f"inner={inner}", "--tasks", task, "--include_path", str(REPO / "task_configs" / "lmms_eval"),
            "--output_path", "outputs/lmms_eval", "--batch_size", str(size)]  # fmt: skip


def trace_of(folder: Path, harness: str, variant: str, inner: str) -> Path:
    model = f"EchoSafe_{inner}"
    base = folder / "outputs" / ("lmms_eval" if harness == "lmms-eval" else "") / model
    return base / f"{model}_{variant}_echosafe_trace.jsonl"


def run_once(harness: str, variant: str, inner: str, size: int, cache: Path) -> dict:
    """One command in a fresh folder: wall seconds, items in the trace and the micro-batch sizes it records."""
    folder = Path(tempfile.mkdtemp(prefix="bench_harness_"))
    (folder / "LMUData").mkdir()
    env = dict(os.environ, LMUData=str(folder / "LMUData"), VLMEVAL_ECHOSAFE_CACHE=str(cache), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(folder / "hf_datasets"), PRED_FORMAT="tsv")  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(command(harness, variant, inner, size), cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Error during evaluation" in log:
        raise SystemExit(f"{harness} {variant} B={size} failed (exit {proc.returncode}):\n{log[-3000:]}")
    lines = [json.loads(x) for x in trace_of(folder, harness, variant, inner).read_text().splitlines()]
    sizes = collections.Counter(rec["batch"]["size"] for rec in lines)
    return {"seconds": seconds, "items": len(lines), "batch_sizes": {str(k): v for k, v in sorted(sizes.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--inner", default="TinyQwen2VL", help="a model name from wrappers/models.yaml")
    ap.add_argument("--variants", nargs=2, default=list(VARIANTS), help="the small and the large split")
    ap.add_argument("--out", default="benchmarks/results/harnesses_cpu_tiny.json")
    args = ap.parse_args()
    small, large = args.variants
    cache = Path(tempfile.mkdtemp(prefix="bench_harness_cache_"))
    run_once("run.py", small, args.inner, 1, cache)  # warm-up: builds the tiny model once for every later run
    load_before = os.getloadavg()
    runs: dict[tuple[str, int, str], list[dict]] = collections.defaultdict(list)
    for rep in range(args.repeats):
        for size in args.sizes:
            order = HARNESSES if rep % 2 == 0 else HARNESSES[::-1]
            for harness in order:
                for variant in (small, large):
                    runs[(harness, size, variant)].append(run_once(harness, variant, args.inner, size, cache))
                    r = runs[(harness, size, variant)][-1]
                    print(f"{harness:9s} B={size:<3d} {variant:26s} {r['seconds']:7.1f} s  batches {r['batch_sizes']}",
                          flush=True)  # fmt: skip
    result: dict = {
        "bench": "harnesses",
        "inner": f"EchoSafe_{args.inner}",
        "judge": "rule",
        "variants": {v: VARIANTS[v][1] for v in (small, large)},
        "repeats": args.repeats,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "runs": {},
        "lmms_over_run_py": {},
    }
    for size in args.sizes:
        for harness in HARNESSES:
            t_small = statistics.median(r["seconds"] for r in runs[(harness, size, small)])
            t_large = statistics.median(r["seconds"] for r in runs[(harness, size, large)])
            n_small, n_large = runs[(harness, size, small)][0]["items"], runs[(harness, size, large)][0]["items"]
            result["runs"][f"{harness} B={size}"] = {
                "whole_command_items_per_s": round(n_large / t_large, 3),
                "inference_items_per_s": round((n_large - n_small) / (t_large - t_small), 3),
                "fixed_seconds": round(t_small - n_small * (t_large - t_small) / (n_large - n_small), 1),
                "seconds": {
                    small: [round(r["seconds"], 1) for r in runs[(harness, size, small)]],
                    large: [round(r["seconds"], 1) for r in runs[(harness, size, large)]],
                },  # fmt: skip
                "echosafe_batch_sizes": runs[(harness, size, large)][0]["batch_sizes"],
            }
        lmms, vlm = result["runs"][f"lmms-eval B={size}"], result["runs"][f"run.py B={size}"]
        result["lmms_over_run_py"][f"B={size}"] = {
            k: round(lmms[k] / vlm[k], 3) for k in ("whole_command_items_per_s", "inference_items_per_s")
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["runs"].items():
        print(f"{name:14s} whole command {r['whole_command_items_per_s']:6.2f} items/s, inference "
              f"{r['inference_items_per_s']:6.2f} items/s, fixed {r['fixed_seconds']:5.1f} s, "
              f"EchoSafe batches {r['echosafe_batch_sizes']}")  # fmt: skip
    for size, ratio in result["lmms_over_run_py"].items():
        print(f"lmms-eval / run.py at {size}: {ratio}")


if __name__ == "__main__":
    main()
