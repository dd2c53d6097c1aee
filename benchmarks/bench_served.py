"""Items per second of EchoSafe over a served inner model at B = 1, 4, 8, 16 concurrent calls, and under torchrun
with W = 1, 2 CPU ranks, each measured side by side in one run.

Served: EchoSafe's loop (one micro-batch of B items per call of the defense, what `run.py --base-url URL
--batch-size B` hands it) around `ServedVLM`, against two endpoints on loopback:

- ``transformers serve`` serving the tiny Qwen2-VL as ``tinyvlm`` (a real OpenAI-compatible server: base64
  images, multi-turn, the probe for ``response_format``);
- a fixed-latency endpoint: every call answers after ``--latency`` seconds however many are in flight, which is
  what an engine with continuous batching (vLLM, SGLang) approximates while it is not compute-bound. It shows what
  the client's concurrency does when the server can overlap calls; it is not a model.

"Base" sends the same answer turns with the same concurrency and no memory (`Base_<name>` with ``--api-nproc B``).
Every configuration starts from an empty memory; repeats go round all configurations, starting at a different
one each time. The key is text only (MiniLM): the served path's image encoder is CLIP, whose weights are not
available offline, and it costs the same at every B.

torchrun: ``torchrun --nproc_per_node W`` runs this file as a worker that times the launcher's runner
(`vlmevalkit.runner.infer_data`, what `run.py` puts in place of the host's loop) for EchoSafe on the tiny Qwen2-VL
run by the plugin's own backend: W = 1 at B and 2B, W = 2 at B.

Every process (this one, the server, each rank) computes on ``--threads`` threads (default 1): on a shared machine
two OpenMP threads in one process can run many times slower than one, which would measure the machine's load
rather than the configurations.

    python benchmarks/bench_served.py --out benchmarks/results/served_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFLECTION = (
    "Scenario: a request about an everyday object\nSafety signals: stated intent, context\nDecision: safe\n"
    "Justification: nothing in it points to harm."
)


# ---- endpoints ----------------------------------------------------------------------------------------------


def fixed_latency_handler(latency: float) -> type[BaseHTTPRequestHandler]:
    """The request handler of an OpenAI-style chat endpoint whose every call takes ``latency`` seconds: a
    well-formed reflection to a reflection turn, a fixed reply to anything else."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            last = body["messages"][-1]["content"]
            last = last if isinstance(last, str) else " ".join(c.get("text", "") for c in last)
            text = REFLECTION if "Reflect on the request" in last else "Here is a careful reply."
            time.sleep(latency)
            payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _serve_fixed_latency(port: int, latency: float) -> None:
    """An OpenAI-style chat endpoint whose every call takes ``latency`` seconds, concurrently (its own process, so
    its threads do not share the client's interpreter lock)."""
    ThreadingHTTPServer(("127.0.0.1", port), fixed_latency_handler(latency)).serve_forever()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # it answers (the fixed-latency endpoint has no GET route)
            return
        except OSError:
            if not alive():
                raise RuntimeError(f"{what} did not start") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within 180 s") from None
            time.sleep(0.5)


def start_transformers_serve(where: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """`transformers serve` on a free loopback port, serving the tiny Qwen2-VL as ``tinyvlm``."""
    from vlmeval_echosafe.models.tiny import build_tiny_qwen2vl

    build_tiny_qwen2vl(where / "tinyvlm")
    port = _free_port()
    cli = Path(sys.executable).with_name("transformers")
    log = (where / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
        cwd=where,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait_until_up(
        f"http://127.0.0.1:{port}/health",
        lambda: proc.poll() is None,
        f"transformers serve (log: {where / 'serve.log'})",
    )
    return proc, f"http://127.0.0.1:{port}/v1"


def start_fixed_latency(
    latency: float, serve: Callable[[int, float], None] = _serve_fixed_latency
) -> tuple[object, str]:
    """``serve(port, latency)`` in a process of its own on a free loopback port, once it answers."""
    import multiprocessing

    port = _free_port()
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(port, latency), daemon=True)
    proc.start()
    _wait_until_up(f"http://127.0.0.1:{port}/", proc.is_alive, "the fixed-latency endpoint")
    return proc, f"http://127.0.0.1:{port}/v1"


# ---- served -------------------------------------------------------------------------------------------------


def bench_endpoint(url: str, model: str, messages: list, dataset, sizes: list[int], repeats: int, max_tokens: int):
    from demo_items import as_host_model, hand_off

    from vlmeval_echosafe.core.inner import ServedInner
    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.models.served import FAIL_MSG, ServedVLM

    inner = ServedVLM(model, url, max_tokens=max_tokens, retry=2)
    settings = {"encoders": {"text": "minilm", "image": "none"}, "reflect_tokens": 12}
    root = Path(tempfile.mkdtemp())
    base = ServedInner(inner)

    def run(kind: str, size: int, rep: int) -> tuple[float, list[str]]:
        if kind == "EchoSafe":  # a fresh, empty memory for every run; its text encoder loaded before timing
            echo = as_host_model(
                EchoSafe, inner, name="EchoSafe_bench", run_dir=root / f"{size}-{rep}", settings=settings
            )
            hand_off(echo, dataset)
            echo.defense.keys.keys([([], "warm up")])
        t, out = time.perf_counter(), []
        for start in range(0, len(messages), size):
            chunk = messages[start : start + size]
            if kind == "EchoSafe":
                out += echo.generate_batch(chunk, dataset=dataset.dataset_name)
            else:
                out += base.answer(chunk, dataset.dataset_name, keep=False).answers
        if kind == "EchoSafe":
            echo.flush()  # the end of the stream, as the runner's loop ends it
        return time.perf_counter() - t, out

    run("EchoSafe", 2, -1)  # warm-up: the server loads the model, MiniLM loads
    seconds: dict[tuple[str, int], list[float]] = {}
    failed: dict[tuple[str, int], int] = {}
    for rep in range(repeats):
        order = sizes[rep % len(sizes) :] + sizes[: rep % len(sizes)]
        for kind in ("Base", "EchoSafe"):
            for size in order:
                s, out = run(kind, size, rep)
                seconds.setdefault((kind, size), []).append(s)
                failed[(kind, size)] = sum(FAIL_MSG in a for a in out)
    n, rows = len(messages), {}
    for kind in ("Base", "EchoSafe"):
        one = n / statistics.median(seconds[(kind, sizes[0])])
        for size in sizes:
            ips = n / statistics.median(seconds[(kind, size)])
            rows[f"{kind} B={size}"] = {
                "items_per_s": round(ips, 3),
                f"speedup_vs_B={sizes[0]}": round(ips / one, 3),
                "seconds_per_run": [round(x, 3) for x in seconds[(kind, size)]],
                "failed_calls_last_run": failed[(kind, size)],
            }
    for size in sizes:
        rows[f"EchoSafe B={size}"]["time_ratio_vs_base"] = round(
            rows[f"Base B={size}"]["items_per_s"] / rows[f"EchoSafe B={size}"]["items_per_s"], 3
        )
    return {"decoding": ServedInner(inner).describe()["decoding"], "runs": rows}


# ---- torchrun -----------------------------------------------------------------------------------------------


def torchrun_worker(items: int, batch: int, out: str) -> None:
    """One rank: the launcher's runner on the first ``items`` demo rows, timed between two barriers, after a
    warm-up step on another memory (weights, encoders and first allocations are not timed)."""
    sys.path.insert(0, str(HERE))
    import torch.distributed as dist
    import vlmeval.inference as host
    from demo_items import as_host_model, inner_and_items

    from vlmeval_echosafe.catalog import defense_entries, defense_settings
    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.vlmevalkit import runner
    from vlmeval_echosafe.vlmevalkit.torchrun import init_process_group

    init_process_group()
    inner, dataset, _ = inner_and_items("TinyQwen2VL", 0)
    entries, extra = defense_entries()
    settings = defense_settings(EchoSafe, entries["EchoSafe"], extra, "TinyQwen2VL", "plugin")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    rows = dataset.data

    def run(n: int) -> float:
        work = _shared(tempfile.mkdtemp() if rank == 0 else None)
        model = as_host_model(EchoSafe, inner, name="EchoSafe_bench", run_dir=work, settings=settings)
        model.defense.keys.keys([([], "warm up")])  # its text encoder loaded before timing
        dataset.data = rows.iloc[:n]
        out_file = f"{work}/{rank}{world}_{dataset.dataset_name}.pkl"
        if dist.is_initialized():
            dist.barrier()
        t = time.perf_counter()
        run_rows = partial(runner.infer_data, batch_size=batch, host_infer_data=host.infer_data)
        run_rows(model, "EchoSafe_bench", work, dataset, out_file)  # the launcher's runner
        if dist.is_initialized():
            dist.barrier()
        return time.perf_counter() - t

    run(world * batch)  # warm-up
    elapsed = run(items)
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": elapsed, "items": items, "world": world, "batch": batch}))
    if dist.is_initialized():
        dist.destroy_process_group()


def _shared(path: str | None) -> str:
    """Rank 0's temporary folder, on every rank."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return path or tempfile.mkdtemp()
    box = [path]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def bench_torchrun(configs: list[tuple[int, int]], items: int, repeats: int, threads: int) -> dict:
    seconds: dict[tuple[int, int], list[float]] = {}
    for rep in range(repeats):
        order = configs[rep % len(configs) :] + configs[: rep % len(configs)]
        for world, batch in order:
            out = Path(tempfile.mkdtemp()) / "t.json"
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
            cmd += [__file__, "--torchrun-worker", "--items", str(items), "--batch", str(batch), "--out", str(out)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            seconds.setdefault((world, batch), []).append(json.loads(out.read_text())["seconds"])
    base = items / statistics.median(seconds[configs[0]])
    rows = {}
    for world, batch in configs:
        ips = items / statistics.median(seconds[(world, batch)])
        rows[f"W={world} B={batch}"] = {
            "items_per_s": round(ips, 3),
            f"speedup_vs_W={configs[0][0]}_B={configs[0][1]}": round(ips / base, 3),
            "seconds_per_run": [round(x, 3) for x in seconds[(world, batch)]],
            "threads_per_rank": threads,
        }
    return {"inner": "TinyQwen2VL (plugin backend)", "items": items, "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.25, help="seconds per call of the fixed-latency endpoint")
    ap.add_argument("--max-tokens", type=int, default=16, help="answer tokens per call to transformers serve")
    ap.add_argument("--torchrun-items", type=int, default=24)
    ap.add_argument("--torchrun-batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="compute threads of every process")
    ap.add_argument("--skip", choices=["served", "torchrun"], nargs="*", default=[])
    ap.add_argument("--out", default="benchmarks/results/served_cpu_tiny.json")
    ap.add_argument("--torchrun-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torchrun_worker:
        return torchrun_worker(args.items, args.batch, args.out)

    sys.path.insert(0, str(HERE))
    import torch
    from demo_items import inner_and_items

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    result: dict = {
        "bench": "served",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "threads": args.threads},
    }
    if "served" not in args.skip:
        _, dataset, messages = inner_and_items("TinyQwen2VL", args.items)
        where = Path(tempfile.mkdtemp())
        serve, url = start_transformers_serve(where, args.threads)
        try:
            common = dict(messages=messages, dataset=dataset, sizes=args.sizes, repeats=args.repeats)
            result["transformers_serve"] = {
                "model": "tinyvlm (tiny Qwen2-VL, CPU)",
                "max_tokens": args.max_tokens,
                **bench_endpoint(url, "tinyvlm", max_tokens=args.max_tokens, **common),
            }
            stub, stub_url = start_fixed_latency(args.latency)
            result["fixed_latency_endpoint"] = {
                "latency_s": args.latency,
                **bench_endpoint(stub_url, "stub", max_tokens=args.max_tokens, **common),
            }
            stub.terminate()
        finally:
            serve.terminate()
            serve.wait(timeout=30)
        result["items"] = len(messages)
    if "torchrun" not in args.skip:
        b = args.torchrun_batch
        configs = [(1, b), (2, b), (1, 2 * b)]
        result["torchrun"] = bench_torchrun(configs, args.torchrun_items, args.repeats, args.threads)
    result["machine"]["loadavg_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for section in ("transformers_serve", "fixed_latency_endpoint", "torchrun"):
        for name, row in result.get(section, {}).get("runs", {}).items():
            ratio = f"  EchoSafe/Base x{row['time_ratio_vs_base']:.2f}" if "time_ratio_vs_base" in row else ""
            print(f"{section:24s} {name:14s} {row['items_per_s']:8.2f} items/s{ratio}")


if __name__ == "__main__":
    main()
