"""EchoSafe Guard as a process of its own, under load, in front of a stub upstream: 200 requests at concurrency 16
without an error, `kill -9` under load then a restart that finds every acknowledged insight once, and a full
reflection queue that drops reflections (counted) without failing a request."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from guard_helpers import ADMIN, MODEL, free_port, kind, serve_cmd, start_process, upstream, user
from openai_stub import StubServer

ALICE = "sk-alice-0001"
SLOW = {"reflect": 0.0}  # seconds each reflection takes at the stub


@pytest.fixture(scope="module")
def stub():
    base = upstream()

    def reply(body: dict):
        if kind(body) == "reflect":
            time.sleep(SLOW["reflect"])
        return base(body)

    with StubServer(reply, full=True) as server:
        yield server


def insights(url: str, tenant: str = "alice") -> list[dict]:
    reply = httpx.get(
        f"{url}/admin/tenants/{tenant}/insights", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    reply.raise_for_status()
    return reply.json()


def one(url: str, i: int) -> str:
    c = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=0, timeout=60)
    messages = user(f"topic:item{i % 7} question number {i}")
    if i % 2:
        return "".join(
            p.choices[0].delta.content or ""
            for p in c.chat.completions.create(model=MODEL, messages=messages, stream=True)
        )
    return c.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content


def metric(url: str, prefix: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(prefix))


@pytest.mark.slow
def test_load_then_kill_9_then_restart_keeps_every_acknowledged_insight_once(stub, tmp_path):
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", tmp_path / "guard.log"
    proc = start_process(serve_cmd(tmp_path, stub.base_url, port), log, port)
    try:
        # 200 requests at concurrency 16, half of them streamed: no errors, one insight per request.
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: one(url, i), range(200)))
        assert answers == ["Here is a careful reply."] * 200
        deadline = time.monotonic() + 60
        while metric(url, "guard_insights_total") < 200:
            assert time.monotonic() < deadline, "reflections did not finish"
            time.sleep(0.2)
        assert metric(url, 'guard_insights_total{outcome="stored"') == 200
        assert metric(url, "guard_reflections_dropped_total") == 0
        assert metric(url, 'guard_requests_total{status="200"') == 200

        # More load, and kill -9 in the middle of it; what the admin API listed was acknowledged (stored, fsynced).
        acknowledged: dict[int, str] = {}
        stop = threading.Event()

        def load() -> None:
            i = 1000
            while not stop.is_set():
                i += 1
                try:
                    one(url, i)
                except (openai.APIError, httpx.HTTPError):
                    pass

        workers = [threading.Thread(target=load, daemon=True) for _ in range(8)]
        for w in workers:
            w.start()
        while len(acknowledged) < 240:
            acknowledged.update({r["id"]: r["request"] for r in insights(url)})
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        for w in workers:
            w.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    # Restart (a queue of one and one slow worker, for the next part): every acknowledged insight, none twice.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_process(
        serve_cmd(tmp_path, stub.base_url, port, "--queue-size", "1", "--reflect-workers", "1"), log, port
    )
    try:
        after = insights(url)
        by_id = {r["id"]: r["request"] for r in after}
        assert all(by_id.get(i) == request for i, request in acknowledged.items())
        requests = [r["request"] for r in after]
        assert len(requests) == len(set(requests)) and sorted(by_id) == list(range(len(after)))

        # A full queue: every request is answered; the reflections that found no room are counted and logged.
        SLOW["reflect"] = 0.5
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: one(url, i), range(5000, 5012)))
        assert answers == ["Here is a careful reply."] * 12
        dropped = metric(url, "guard_reflections_dropped_total")
        assert dropped >= 1
        lines = [json.loads(x) for x in (tmp_path / "work/guard/alice/requests.jsonl").read_text().splitlines()]
        assert sum(x["reflection"] == "dropped: queue full" for x in lines) == dropped
    finally:
        SLOW["reflect"] = 0.0
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
