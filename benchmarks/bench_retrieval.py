"""Memory-bank retrieval at growing sizes: exact (IndexFlatIP) vs approximate (IndexIVFFlat) top-5.

For each size n, on clustered synthetic unit vectors (Gaussian clusters around random unit centres):
  * p50/p99 latency of ``MemoryBank.search(key, 5)`` with the exact index and with the approximate index
    (per ``--nprobe`` value), one query at a time;
  * recall@5 of the approximate index against exact top-5 on the same vectors;
  * insert throughput: ``--inserts`` one-at-a-time ``MemoryBank.add`` calls at that size, for each index;
  * raw faiss exact search (``IndexFlatIP.search``, one query) vs numpy brute force (matvec + argpartition),
    on the same vectors and queries, as the ratio numpy time / faiss time;
  * the one-off switch time (k-means training + adding all n vectors; this step uses every core).
Latency and inserts are measured with faiss (OpenMP) and BLAS limited to ONE thread, so the numbers depend
less on how busy the other cores are and match a single-threaded serving loop.

    python benchmarks/bench_retrieval.py --sizes 1000 10000 100000 1000000 --dim 768 --queries 200 \\
        --out benchmarks/results/retrieval.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlmeval_echosafe.memory import MemoryBank  # noqa: E402

ENC = {"text": "bench:synthetic"}
K = 5


@contextmanager
def single_thread():
    """faiss OpenMP and every loaded BLAS limited to one thread inside the block."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # faiss's one-query search uses no BLAS; numpy's matvec then runs on default threads
        threadpool_limits = None
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        faiss.omp_set_num_threads(before)


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """``n`` unit vectors: a random centre plus isotropic Gaussian noise of expected norm ``spread``."""
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for lo in range(0, n, 100_000):  # chunks keep the temporary noise array small at 1M x 768
        m = min(100_000, n - lo)
        x = centres[rng.integers(0, len(centres), m)]
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(spread / np.sqrt(centres.shape[1]))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo : lo + m] = x
    return out


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def time_search(bank: MemoryBank, queries: np.ndarray) -> tuple[dict, list[list[int]]]:
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        hits = bank.search(q, K)
        times.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    return percentiles(times), ids


def time_inserts(bank: MemoryBank, rows: np.ndarray, start: int) -> float:
    t = time.perf_counter()
    for j, v in enumerate(rows):
        bank.add(v, {"scenario": "bench"}, {"i": start + j})
    return len(rows) / (time.perf_counter() - t)


def raw_exact_vs_numpy(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray) -> dict:
    """One query at a time: faiss IndexFlatIP.search vs numpy matvec + argpartition (+ sort of the top k)."""
    faiss_t, numpy_t = [], []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], K)
        faiss_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sims = vectors @ q
        top = np.argpartition(-sims, K - 1)[:K]
        top[np.argsort(-sims[top])]
        numpy_t.append(time.perf_counter() - t)
    f, n = percentiles(faiss_t), percentiles(numpy_t)
    return {"faiss_p50_ms": f["p50_ms"], "numpy_p50_ms": n["p50_ms"], "numpy_over_faiss": n["p50_ms"] / f["p50_ms"]}


def hnsw_block(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, extra: np.ndarray) -> dict:
    """The alternative not chosen: raw IndexHNSWFlat (M=32, efConstruction 40, efSearch 64, inner product)."""
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction, index.hnsw.efSearch = 40, 64
    t = time.perf_counter()
    index.add(vectors)
    build_s = time.perf_counter() - t
    with single_thread():
        times, ids = [], []
        for q in queries:
            t = time.perf_counter()
            _, found = index.search(q[None, :], K)
            times.append(time.perf_counter() - t)
            ids.append(found[0].tolist())
        t = time.perf_counter()
        for v in extra:
            index.add(v[None, :])
        insert_per_s = len(extra) / (time.perf_counter() - t)
    return {
        "index": "IndexHNSWFlat",
        "M": 32,
        "efConstruction": 40,
        "efSearch": 64,
        "build_s": build_s,
        **percentiles(times),
        "recall_at_5": recall(ids, truth),
        "insert_per_s": insert_per_s,
    }


def recall(approx: list[list[int]], exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e.tolist())) / K for a, e in zip(approx, exact, strict=True)]))


def bank_memory(bank: MemoryBank, dim: int) -> dict:
    """What the bank holds at this size: the IVF index (raw vectors + 8-byte ids + centroids), the float32 copy
    of the keys (allocated by doubling), the insight/meta records, and the process's peak RSS so far."""
    import resource
    import sys

    total = len(bank)
    index_mb = (total * (dim * 4 + 8) + int(bank._index.nlist) * dim * 4) / 2**20
    copy_mb = bank._vectors._buf.nbytes / 2**20
    records = bank.entries()
    sample = records[: min(1000, total)]
    per_record = sum(sys.getsizeof(i) + sys.getsizeof(m) for i, m in sample) / max(1, len(sample))
    return {
        "entries": total,
        "index_mb": round(index_mb, 1),
        "key_copy_mb": round(copy_mb, 1),
        "records_mb_estimate": round(per_record * total / 2**20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bench_size(n: int, args: argparse.Namespace, centres: np.ndarray) -> dict:
    rng = np.random.default_rng([args.seed, n])
    inserts = args.inserts
    queries = clustered(rng, centres, args.queries, args.spread)
    extra = clustered(rng, centres, 2 * inserts, args.spread)
    bank = MemoryBank(args.dim, ENC, use_gpu=None if args.gpu else False, approx_threshold=None, nprobe=args.nprobe[0])
    t = time.perf_counter()
    for lo in range(0, n, 100_000):
        for j, v in enumerate(clustered(rng, centres, min(100_000, n - lo), args.spread)):
            bank.add(v, {"scenario": "bench"}, {"i": lo + j})
    fill_s = time.perf_counter() - t
    flat = bank._index  # the bank's own exact index and stored keys (private: benchmark only)
    with single_thread():
        exact_lat, _ = time_search(bank, queries)
        raw = raw_exact_vs_numpy(flat, bank._vectors.view(), queries)
        exact_ins = time_inserts(bank, extra[:inserts], n)
    _, truth = flat.search(queries, K)  # ground truth on the n + inserts vectors the approximate index gets
    hnsw = hnsw_block(bank._vectors.view(), queries, truth, extra[inserts:]) if args.hnsw else None
    t = time.perf_counter()
    bank.make_approximate()
    switch_s = time.perf_counter() - t
    del flat
    sweep = []
    with single_thread():
        for nprobe in args.nprobe:
            bank.set_nprobe(nprobe)
            lat, ids = time_search(bank, queries)
            sweep.append({"nprobe": nprobe, **lat, "recall_at_5": recall(ids, truth)})
        bank.set_nprobe(args.nprobe[0])
        approx_ins = time_inserts(bank, extra[inserts:], n + inserts)
    result = {
        "n": n,
        "dim": args.dim,
        "on_gpu": bank.on_gpu,
        "fill_s": fill_s,
        "exact": {"index": "IndexFlatIP", **exact_lat, "insert_per_s": exact_ins},
        "approx": {
            "index": bank.index_kind,
            "nlist": int(bank._index.nlist),
            "switch_s": switch_s,
            **sweep[0],
            "insert_per_s": approx_ins,
            "nprobe_sweep": sweep,
        },
        "faiss_exact_vs_numpy": raw,
        "memory": bank_memory(bank, args.dim),
    }
    if hnsw is not None:
        result["hnsw"] = hnsw
    return result


def table(results: list[dict]) -> str:
    head = (
        f"{'n':>9} {'dim':>4} | {'exact p50':>9} {'p99':>7} | {'approx p50':>10} {'p99':>7} "
        f"{'recall@5':>8} | {'ins/s exact':>11} {'ins/s approx':>12} | {'np/faiss':>8} | {'switch s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        e, a, raw = r["exact"], r["approx"], r["faiss_exact_vs_numpy"]
        lines.append(
            f"{r['n']:>9} {r['dim']:>4} | {e['p50_ms']:>9.3f} {e['p99_ms']:>7.3f} | "
            f"{a['p50_ms']:>10.3f} {a['p99_ms']:>7.3f} {a['recall_at_5']:>8.3f} | "
            f"{e['insert_per_s']:>11.0f} "
            f"{a['insert_per_s']:>12.0f} | {raw['numpy_over_faiss']:>8.2f} | {a['switch_s']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--inserts", type=int, default=2000, help="one-at-a-time adds timed per index and size")
    ap.add_argument(
        "--nprobe",
        type=int,
        nargs="+",
        default=[16, 8],
        help="nprobe values to time; the first is the headline (the bank's default is 16)",
    )
    ap.add_argument("--clusters", type=int, default=256)
    ap.add_argument("--spread", type=float, default=0.5, help="expected noise norm around a cluster centre")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hnsw", action="store_true", help="also time IndexHNSWFlat (the alternative to IVF)")
    ap.add_argument(
        "--gpu", action="store_true", help="let the bank use GPU faiss where faiss is a GPU build that sees a GPU"
    )
    ap.add_argument("--out", default="benchmarks/results/retrieval.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    results = []
    for n in args.sizes:
        results.append(bench_size(n, args, centres))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    report = {
        "benchmark": "retrieval",
        "config": {
            "sizes": args.sizes,
            "dim": args.dim,
            "queries": args.queries,
            "k": K,
            "inserts": args.inserts,
            "nprobe": args.nprobe,
            "clusters": args.clusters,
            "spread": args.spread,
            "seed": args.seed,
            "measure_threads": 1,
            "gpu_requested": args.gpu,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    return report


if __name__ == "__main__":
    main()
