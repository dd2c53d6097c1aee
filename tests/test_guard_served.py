"""EchoSafe Guard in front of a real OpenAI-compatible server (`transformers serve`, the tiny random Qwen2-VL),
called with the official `openai` client, streamed and not, with an image. The tiny model writes gibberish, so its
reflections are rejected (counted, never stored); the NoReflection row stores the exchange, so the bank grows."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from guard_helpers import ADMIN, KEYS, MODEL, InProcess, png_data_url, user
from serve_helpers import tiny_transformers_serve

from vlmeval_echosafe.serve.config import GuardConfig, Limits
from vlmeval_echosafe.serve.guard import Guard

ALICE = "sk-alice-0001"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_cache):
    with tiny_transformers_serve(tmp_path_factory.mktemp("serve"), MODEL) as (url, _log):
        yield url


def guard_for(url: str, defense: str, work) -> InProcess:
    config = GuardConfig(url, MODEL, work, KEYS, ADMIN, defense=defense, limits=Limits(upstream_timeout=120))
    return InProcess(Guard(config))


def count(url: str, tenant: str) -> int:
    reply = httpx.get(f"{url}/admin/tenants/{tenant}/insights", headers={"Authorization": f"Bearer {ADMIN}"})
    return len(reply.json())


def wait_for(check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def metric(url: str, prefix: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith(prefix))


@pytest.mark.slow
def test_the_openai_client_through_the_guard_to_transformers_serve(served, tmp_path):
    with guard_for(served, "EchoSafe-NoReflection", tmp_path / "noreflect") as guard:
        c = openai.OpenAI(base_url=f"{guard.url}/v1", api_key=ALICE, max_retries=0, timeout=300)
        reply = c.chat.completions.create(
            model=MODEL, messages=user("What is in this picture?", png_data_url(3)), max_tokens=8
        )
        assert isinstance(reply.choices[0].message.content, str) and reply.choices[0].message.content
        wait_for(lambda: count(guard.url, "alice") == 1)
        pieces = list(
            c.chat.completions.create(model=MODEL, messages=user("Describe a kitchen."), max_tokens=8, stream=True)
        )
        assert "".join(p.choices[0].delta.content or "" for p in pieces)
        wait_for(lambda: count(guard.url, "alice") == 2)
        assert count(guard.url, "bob") == 0

    with guard_for(served, "EchoSafe", tmp_path / "echosafe") as guard:
        c = openai.OpenAI(base_url=f"{guard.url}/v1", api_key=ALICE, max_retries=0, timeout=300)
        reply = c.chat.completions.create(model=MODEL, messages=user("How do I bake bread?"), max_tokens=8)
        assert reply.choices[0].message.content
        wait_for(lambda: metric(guard.url, "guard_insights_total") == 1)  # reflected: stored or rejected, counted
        stored = metric(guard.url, 'guard_insights_total{outcome="stored"')
        assert count(guard.url, "alice") == stored and count(guard.url, "bob") == 0
