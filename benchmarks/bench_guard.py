"""EchoSafe Guard's added latency: the same requests sent to the upstream directly and through the guard, side by
side in one run, at concurrency 1, 8 and 32.

The upstream is a fixed-latency endpoint (as in bench_served.py: every call answers after ``--latency`` seconds
however many are in flight, an engine with continuous batching that is not compute-bound), in a process of its
own; the guard runs as ``vlmeval-echosafe serve`` in another (row ``EchoSafe_tinyvlm``: text-only MiniLM keys),
with reflection off the request path. At each concurrency, rounds alternate direct and proxied batches (which one
goes first alternates too), so machine noise hits both alike. Per concurrency: p50 and p99 of each, the added
latency at p50 and p99 (proxied minus direct), and the guard's own retrieval time (embed + search, waiting for
the retrieval thread included; its Server-Timing header) at p50 and p99 over the same requests, since the goal is
stated as "p50 <= 15 ms plus retrieval". Every request of
every round is distinct, so the tenant's bank grows during the run as in deployment.

    python benchmarks/bench_guard.py --out benchmarks/results/guard_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_served import _free_port, _wait_until_up, fixed_latency_handler, start_fixed_latency

KEY, ADMIN, MODEL = "sk-bench-tenant-01", "bench-admin-token-000001", "tinyvlm"


def _serve_fixed_latency(port: int, latency: float) -> None:
    """bench_served's fixed-latency endpoint with keep-alive and a listen backlog deep enough for 32 clients plus
    the guard (a shallow one turns bursts into 1 s SYN retries)."""
    from http.server import ThreadingHTTPServer

    class Handler(fixed_latency_handler(latency)):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    class Server(ThreadingHTTPServer):
        request_queue_size = 512

    Server(("127.0.0.1", port), Handler).serve_forever()


def start_guard(work: Path, upstream: str, threads: int) -> tuple[subprocess.Popen, str]:
    (work / "keys.yaml").write_text(f"{KEY}: bench\n")
    port = _free_port()
    cmd = [sys.executable, "-m", "vlmeval_echosafe.launcher", "serve", "--upstream", upstream, "--model", MODEL]
    cmd += ["--work-dir", str(work / "work"), "--keys", str(work / "keys.yaml"), "--admin-token", ADMIN]
    cmd += ["--port", str(port), "--queue-size", "100000"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, env=env, stdout=(work / "guard.log").open("w"), stderr=subprocess.STDOUT)
    _wait_until_up(f"http://127.0.0.1:{port}/healthz", lambda: proc.poll() is None, f"the guard ({work / 'guard.log'})")
    return proc, f"http://127.0.0.1:{port}/v1"


def retrieval_of(reply: httpx.Response) -> float | None:
    """The guard's retrieval time (s) from its Server-Timing header; None for the upstream's replies."""
    for part in reply.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "retrieval":
            return float(dur) / 1e3
    return None


async def batch(
    client: httpx.AsyncClient, url: str, key: str, start: int, n: int, concurrency: int, retrievals: list[float]
) -> list[float]:
    """Latency (s) of ``n`` distinct requests, ``concurrency`` in flight at a time; every one must succeed. The
    guard's retrieval times go to ``retrievals``."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> float:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Request {i}: how do I fix item {i % 13}?"}]}
        async with gate:
            t = time.perf_counter()
            reply = await client.post(f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            took = time.perf_counter() - t
        if reply.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status_code}: {reply.text[:300]}")
        if (r := retrieval_of(reply)) is not None:
            retrievals.append(r)
        return took

    return list(await asyncio.gather(*(one(start + i) for i in range(n))))


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


async def measure(direct: str, guard: str, levels: list[int], per_round: int, rounds: int) -> dict:
    out, counter = {}, 0
    limits = httpx.Limits(max_connections=max(levels) * 2, max_keepalive_connections=max(levels) * 2)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await batch(client, guard, KEY, -100, 4, 1, [])  # warm: encoders loaded, connections open
        for c in levels:
            lat: dict[str, list[float]] = {"direct": [], "guard": []}
            retrievals: list[float] = []
            for r in range(rounds):
                order = ("direct", "guard") if r % 2 == 0 else ("guard", "direct")
                for side in order:
                    url = direct if side == "direct" else guard
                    lat[side] += await batch(client, url, KEY, counter, per_round * c, c, retrievals)
                    counter += per_round * c
            row = {"requests_each": len(lat["guard"])}
            for side, xs in lat.items():
                row[f"{side}_p50_ms"], row[f"{side}_p99_ms"] = pct(xs, 50) * 1e3, pct(xs, 99) * 1e3
            row["added_p50_ms"] = row["guard_p50_ms"] - row["direct_p50_ms"]
            row["added_p99_ms"] = row["guard_p99_ms"] - row["direct_p99_ms"]
            row["retrieval_p50_ms"] = pct(retrievals, 50) * 1e3
            row["retrieval_p99_ms"] = pct(retrievals, 99) * 1e3
            row["added_p50_minus_retrieval_p50_ms"] = row["added_p50_ms"] - row["retrieval_p50_ms"]
            out[f"concurrency_{c}"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
            print(f"c={c}: " + ", ".join(f"{k} {v}" for k, v in out[f"concurrency_{c}"].items()), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--latency", type=float, default=0.05, help="the upstream's fixed latency per call (s)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--per-round", type=int, default=4, help="requests per round per concurrency slot")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="compute threads of the guard process")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/guard_cpu.json"))
    args = p.parse_args()
    upstream_proc, upstream = start_fixed_latency(args.latency, _serve_fixed_latency)
    with tempfile.TemporaryDirectory() as tmp:
        guard_proc, guard = start_guard(Path(tmp), upstream, args.threads)
        try:
            levels = asyncio.run(measure(upstream, guard, args.levels, args.per_round, args.rounds))
            depth = httpx.get(guard.removesuffix("/v1") + "/healthz").json()["reflection_queue"]
        finally:
            guard_proc.send_signal(signal.SIGTERM)
            guard_proc.wait(60)
            upstream_proc.terminate()
    result = {
        "bench": "bench_guard",
        "upstream_latency_s": args.latency,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "guard_threads": args.threads,
        "reflection_queue_at_end": depth,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the machine, at the end
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "levels": levels,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    worst = levels[f"concurrency_{args.levels[0]}"]
    print(
        f"added latency at concurrency {args.levels[0]}: p50 {worst['added_p50_ms']} ms, p99 {worst['added_p99_ms']} ms"
    )


if __name__ == "__main__":
    main()
