"""What durability costs per insight: a full snapshot per save (before) vs one log append per save (now).

One bank of real-size keys (default 3,968-d: MiniLM 384 + Qwen2.5-VL-7B image features 3,584) is grown through
``--sizes``; at each size n, side by side in the same process and on the same folder:

* **old**: ``add`` then ``compact`` per insight, i.e. what ``save`` did before the log: a whole new snapshot,
  fsynced, per durable insight (``--old-inserts`` of them; fewer at large n, see ``old_saves``);
* **new**: ``add`` then ``save`` per insight (``--inserts`` of them): one log record appended and fsynced;
* **amortised**: the new cost plus compaction's share. A compaction is one snapshot of the whole bank, which
  is what an old save measures, and under the default policy one comes every ``period`` insights at size n
  (the log must reach the snapshot's size, and at least ``min_bytes``): ``new + old / period``.

Bytes are what the process hands to ``write`` (``wchar`` in ``/proc/self/io``), seconds are wall time; both per
durable insight (one save per insight, the worst case: EchoSafe saves once per micro-batch). ``--grow N`` also
measures the amortised cost directly: a fresh bank grown from 0 to N entries with a save after every insight,
compactions included. Linux only (``/proc/self/io``). Keys are exact (``IndexFlatIP``); an IVF bank's snapshot
also holds ``vectors.npy``, which doubles the old and the compaction bytes, not the append.

    python benchmarks/bench_persist.py --sizes 200 1000 5000 10000 100000 --dim 3968 --inserts 200 \\
        --old-inserts 20 --grow 20000 --out benchmarks/results/persist.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlmeval_echosafe.memory import MemoryBank  # noqa: E402
from vlmeval_echosafe.memory.persist import DEFAULT_COMPACTION, LOG_FILE  # noqa: E402

ENC = {"text": "minilm:all-MiniLM-L6-v2", "image": "inner:bench"}
OLD_BYTES_BUDGET = 2 << 30  # per size, for the old mode's snapshots: at least 3 saves, at most --old-inserts


def wchar() -> int:
    """Bytes this process has passed to write() so far."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar:"))


class Stream:
    """Unit keys and EchoSafe-shaped insight/meta records, in stream order, generated in chunks."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.dim, self.rng, self.keys, self.next = dim, np.random.default_rng(seed), np.zeros((0, dim)), 0

    def add(self, bank: MemoryBank) -> None:
        if self.next == len(self.keys):
            x = self.rng.standard_normal((4096, self.dim), dtype=np.float32)
            self.keys, self.next = x / np.linalg.norm(x, axis=1, keepdims=True), 0
        i = len(bank)
        insight = {
            "scenario": f"an image of an activity with a question asking for detailed steps, item {i}",
            "safety_signals": ["asks for step-by-step instructions", "the activity in the image is illegal"],
            "decision": "unsafe" if i % 2 else "safe",
            "justification": "the request seeks operational detail for causing harm; refuse and explain why",
        }
        meta = {
            "dataset": "MMSafetyBenchPP",
            "row_index": str(i),
            "pair_id": f"Fraud-Gen-{i // 2}",
            "category": "Fraud",
            "label": "unsafe" if i % 2 else "safe",
            "stream": "EchoSafe_Qwen2.5-VL-7B::MMSafetyBenchPP",
            "stream_pos": i,
        }
        bank.add(self.keys[self.next], insight, meta)
        self.next += 1


def measure(bank: MemoryBank, stream: Stream, root: Path, inserts: int, durable) -> dict:
    """``inserts`` times: add one insight, then make it durable with ``durable(root)``."""
    times = []
    w = wchar()
    for _ in range(inserts):
        t = time.perf_counter()
        stream.add(bank)
        durable(root)
        times.append(time.perf_counter() - t)
    written = wchar() - w
    ms = np.array(times) * 1e3
    return {
        "saves": inserts,
        "bytes_per_insight": written / inserts,
        "s_per_insight": float(np.sum(times)) / inserts,
        "p50_ms": float(np.percentile(ms, 50)),
        "max_ms": float(ms.max()),
    }


def snapshot_bytes(root: Path) -> int:
    snap = root / (root / "CURRENT").read_text().strip()
    return sum(p.stat().st_size for p in snap.iterdir() if p.is_file() and p.name != LOG_FILE)


def point(bank: MemoryBank, stream: Stream, root: Path, args: argparse.Namespace) -> dict:
    n = len(bank)
    old_saves = max(3, min(args.old_inserts, OLD_BYTES_BUDGET // (n * args.dim * 4 + 1)))
    old = measure(bank, stream, root, old_saves, bank.compact)
    snap = snapshot_bytes(root)
    current = (root / "CURRENT").read_text()
    new = measure(bank, stream, root, args.inserts, bank.save)
    new["compactions"] = int((root / "CURRENT").read_text() != current)
    policy = DEFAULT_COMPACTION
    period = math.ceil(max(policy.min_bytes, policy.ratio * snap) / new["bytes_per_insight"])
    amortised = {k: new[k] + old[k] / period for k in ("bytes_per_insight", "s_per_insight")}
    row = {
        "n": n,
        "snapshot_bytes": snap,
        "old": old,
        "new": new,
        "compaction_period_insights": period,
        "amortised": amortised,
        "old_over_new_bytes": old["bytes_per_insight"] / new["bytes_per_insight"],
        "old_over_new_s": old["s_per_insight"] / new["s_per_insight"],
        "old_over_amortised_bytes": old["bytes_per_insight"] / amortised["bytes_per_insight"],
    }
    print(
        f"n={n:>7}: old {old['bytes_per_insight'] / 1e6:9.2f} MB {old['s_per_insight'] * 1e3:9.1f} ms | "
        f"new {new['bytes_per_insight'] / 1e3:6.1f} kB {new['s_per_insight'] * 1e3:6.2f} ms | "
        f"amortised {amortised['bytes_per_insight'] / 1e3:6.1f} kB {amortised['s_per_insight'] * 1e3:6.2f} ms",
        flush=True,
    )
    return row


def grow(n: int, dim: int, tmp: Path) -> dict:
    """A fresh bank grown to ``n`` entries, saved after every insight, compactions and all."""
    root = tmp / "grow"
    bank, stream = MemoryBank(dim, ENC, approx_threshold=None), Stream(dim, seed=1)
    out = {"n": n, **measure(bank, stream, root, n, bank.save)}
    out["snapshots_written"] = int((root / "CURRENT").read_text().strip().removeprefix("snap-"))
    shutil.rmtree(root)
    print(
        f"grow 0 -> {n}: {out['bytes_per_insight'] / 1e3:.1f} kB {out['s_per_insight'] * 1e3:.2f} ms per insight "
        f"(longest save {out['max_ms']:.0f} ms), {out['snapshots_written']} snapshots",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 5000, 10000, 100000])
    ap.add_argument("--dim", type=int, default=3968)
    ap.add_argument("--inserts", type=int, default=200, help="new-mode saves per size")
    ap.add_argument("--old-inserts", type=int, default=20, help="old-mode saves per size (at most)")
    ap.add_argument("--grow", type=int, default=0, help="also grow a fresh bank to this size (0: skip)")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the banks (default: the system's temp)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/persist.json"))
    args = ap.parse_args()
    if sorted(args.sizes) != args.sizes:
        ap.error("--sizes must be increasing: one bank is grown through them")
    tmp = Path(tempfile.mkdtemp(prefix="bench_persist_", dir=args.tmp))
    try:
        bank, stream, root = MemoryBank(args.dim, ENC, approx_threshold=None), Stream(args.dim), tmp / "bank"
        results = []
        for n in args.sizes:
            while len(bank) < n:
                stream.add(bank)
            results.append(point(bank, stream, root, args))
        del bank
        grown = grow(args.grow, args.dim, tmp) if args.grow else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by_n = {r["n"]: r for r in results}
    report = {
        "config": {
            "dim": args.dim,
            "sizes": args.sizes,
            "inserts": args.inserts,
            "old_inserts": args.old_inserts,
            "compaction": {"ratio": DEFAULT_COMPACTION.ratio, "min_bytes": DEFAULT_COMPACTION.min_bytes},
            "bytes": "wchar of /proc/self/io: bytes passed to write()",
            "index": "IndexFlatIP",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        },
        "results": results,
        "grow": grown,
    }
    if 200 in by_n and 5000 in by_n:
        ratios = {m: by_n[5000][m]["bytes_per_insight"] / by_n[200][m]["bytes_per_insight"] for m in ("old", "new")}
        ratios["amortised"] = by_n[5000]["amortised"]["bytes_per_insight"] / by_n[200]["amortised"]["bytes_per_insight"]
        report["bytes_5000_over_200"] = ratios
        print("bytes per insight, 5000 / 200:", {k: round(v, 2) for k, v in ratios.items()}, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
