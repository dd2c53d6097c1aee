"""Servers the tests start on loopback: a free port, waiting for a server process to answer, and `transformers
serve` serving the tiny Qwen2-VL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float, poll: float) -> None:
    """Return once ``url`` answers; if ``proc`` exits first or ``timeout`` seconds pass, kill it and raise with the
    end of its ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start: " + log.read_text()[-3000:]) from None
            time.sleep(poll)


@contextmanager
def tiny_transformers_serve(where: Path, model: str = "tinyvlm") -> Iterator[tuple[str, Path]]:
    """`transformers serve` on a free loopback port, serving the tiny Qwen2-VL as ``model`` (a folder in ``where``,
    the server's working folder), logging to ``where/serve.log``: yields (its base URL, ending in /v1, and the log);
    stopped on exit."""
    from vlmeval_echosafe.models.tiny import build_tiny_qwen2vl

    build_tiny_qwen2vl(where / model)
    port, log = free_port(), where / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    with log.open("w") as out:  # the server holds its own copy of the file
        proc = subprocess.Popen(
            [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
            cwd=where,
            env=dict(os.environ, HF_HUB_OFFLINE="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, log, "transformers serve", timeout=180, poll=0.5)
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)
