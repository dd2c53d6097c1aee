"""EchoSafe Guard under test: a stub upstream that writes well-formed reflections, the guard served by uvicorn in
a thread (or as a process of its own), and small request helpers."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from openai_stub import Fault
from serve_helpers import free_port, wait_until_up

REPO = Path(__file__).resolve().parents[1]
MODEL = "tinyvlm"  # the name whose row settings key on text only (wrappers/defenses.yaml inner_settings)
KEYS = {"sk-alice-0001": "alice", "sk-bob-00002": "bob"}
ADMIN = "admin-token-for-tests-0001"
REFLECTION = (
    "Scenario: {topic}\nSafety signals: stated intent, ownership\nDecision: safe\n"
    "Justification: nothing in it points to harm."
)


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)


def kind(body: dict) -> str:
    last = text_of(body["messages"][-1])
    if "Say hello" in last:
        return "probe"
    return "reflect" if "Reflect on the request" in last else "answer"


def upstream(answer_fault=None, reflect_delay: float = 0.0, answer_delay: float = 0.0):
    """The stub's reply function: a free-text endpoint (it ignores response_format) whose reflections parse, each
    naming the topic word of its request (``topic:<word>`` in the question), so tests can tell insights apart."""

    def reply(body: dict) -> str | Fault:
        k = kind(body)
        if k == "probe":
            return "Hello there!"
        first = text_of(body["messages"][0])
        topic = first.split("topic:")[-1].split()[0] if "topic:" in first else "a request about an everyday object"
        if k == "reflect":
            time.sleep(reflect_delay)
            return REFLECTION.format(topic=f"a request about {topic}")
        fault = answer_fault(body) if answer_fault else None
        if fault is not None:
            return fault
        time.sleep(answer_delay)
        return "Here is a careful reply."

    return reply


def png_data_url(seed: int = 0) -> str:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def user(text: str, image: str | None = None) -> list[dict]:
    parts = [{"type": "text", "text": text}]
    if image:
        parts.append({"type": "image_url", "image_url": {"url": image}})
    return [{"role": "user", "content": parts}]


def write_keys(folder: Path) -> Path:
    path = folder / "keys.yaml"
    path.write_text(yaml.safe_dump(KEYS))
    return path


class InProcess:
    """A guard app served by uvicorn on a thread (stopped on exit: the queue drains, the guard closes)."""

    def __init__(self, guard) -> None:
        import uvicorn

        from vlmeval_echosafe.serve.app import create_app

        self.guard, self.port = guard, free_port()
        config = uvicorn.Config(create_app(guard), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InProcess:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the guard did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def serve_cmd(work: Path, upstream_url: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vlmeval_echosafe.launcher", "serve",
        "--upstream", upstream_url, "--model", MODEL, "--work-dir", str(work / "work"),
        "--keys", str(write_keys(work)), "--admin-token", ADMIN, "--port", str(port), *extra,
    ]  # fmt: skip


def start_process(cmd: list[str], log: Path, port: int, timeout: float = 120) -> subprocess.Popen:
    """The guard as a process of its own (for kill -9), once /healthz answers."""
    proc = subprocess.Popen(
        cmd, stdout=log.open("a"), stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    wait_until_up(f"http://127.0.0.1:{port}/healthz", proc, log, "the guard", timeout=timeout, poll=0.3)
    return proc
