"""EchoSafe Guard through the official `openai` client, in front of a stub upstream that writes well-formed
reflections: answers (streamed and not), per-tenant banks, governance, metrics, faults and bad input."""

from __future__ import annotations

import io
import json
import tarfile
import time

import httpx
import openai
import pytest
from guard_helpers import ADMIN, KEYS, MODEL, InProcess, kind, png_data_url, text_of, upstream, user
from openai_stub import Fault, StubServer

from vlmeval_echosafe.serve.config import GuardConfig, Limits
from vlmeval_echosafe.serve.guard import Guard

ALICE, BOB = "sk-alice-0001", "sk-bob-00002"
FAULT: dict = {}  # what the stub does to the next answers: set by a test, cleared after it


@pytest.fixture(scope="module")
def stub():
    with StubServer(upstream(answer_fault=lambda body: FAULT.get("answer")), full=True) as server:
        yield server


@pytest.fixture(scope="module")
def guard(stub, tmp_path_factory):
    limits = Limits(upstream_timeout=1.5, upstream_retries=1, max_body_bytes=400_000, max_image_bytes=100_000)
    config = GuardConfig(stub.base_url, MODEL, tmp_path_factory.mktemp("guard"), KEYS, ADMIN, limits=limits)
    with InProcess(Guard(config)) as server:
        yield server


@pytest.fixture(autouse=True)
def _clear_faults():
    yield
    FAULT.clear()


def client(server: InProcess, key: str = ALICE) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def admin(server: InProcess, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30, **kw)


def settled(server: InProcess, tenant: str, n: int, timeout: float = 20) -> list[dict]:
    """The tenant's insights once there are ``n`` (reflection runs after the answer)."""
    deadline = time.monotonic() + timeout
    while len(rows := admin(server, "GET", f"/admin/tenants/{tenant}/insights").json()) < n:
        assert time.monotonic() < deadline, f"{tenant} has {len(rows)} insights, expected {n}"
        time.sleep(0.05)
    return rows


def ask(server: InProcess, text: str, key: str = ALICE, image: str | None = None):
    raw = client(server, key).chat.completions.with_raw_response.create(model=MODEL, messages=user(text, image))
    ids = raw.headers["x-echosafe-insights"]
    return raw.parse(), [int(i) for i in ids.split(",")] if ids else []


def answer_prompts(stub: StubServer, since: int) -> list[str]:
    return [text_of(r["messages"][0]) for r in stub.requests[since:] if kind(r) == "answer"]


def test_answers_streamed_and_not_and_the_tenant_bank_grows_alone(guard, stub):
    reply, used = ask(guard, "topic:bicycles how do I fix a flat tyre?", image=png_data_url(1))
    assert reply.choices[0].message.content == "Here is a careful reply." and used == []
    assert reply.choices[0].finish_reason == "stop"  # the upstream's
    first = settled(guard, "alice", 1)[0]
    assert first["scenario"] == "a request about bicycles" and first["decision"] == "safe"
    image_sent = next(r for r in stub.requests if kind(r) == "answer")["messages"][0]["content"]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png") for p in image_sent)

    seen = len(stub.requests)
    pieces = list(
        client(guard).chat.completions.create(model=MODEL, messages=user("topic:bicycles brakes?"), stream=True)
    )
    assert "".join(p.choices[0].delta.content or "" for p in pieces) == "Here is a careful reply."
    assert pieces[-1].choices[0].finish_reason == "stop"
    assert "a request about bicycles" in answer_prompts(stub, seen)[0]  # alice's insight went into the answer turn
    settled(guard, "alice", 2)

    assert admin(guard, "GET", "/admin/tenants/bob/insights").json() == []  # alice's requests wrote only hers
    seen = len(stub.requests)
    reply, used = ask(guard, "topic:bicycles how do I fix a flat tyre?", key=BOB)
    assert used == [] and "bicycles" not in answer_prompts(stub, seen)[0].split("topic:")[0]  # nothing of alice's
    bob = settled(guard, "bob", 1)
    assert len(bob) == 1 and bob[0]["request"] != first["request"] and len(settled(guard, "alice", 2)) == 2


def test_a_stored_insight_is_retrieved_and_reported_in_the_header(guard):
    ask(guard, "topic:gardening when should I prune roses?")
    n = len(settled(guard, "alice", 1))
    _, used = ask(guard, "topic:gardening when should I prune roses?")
    assert used and all(0 <= i < n for i in used)
    shown = admin(guard, "GET", f"/admin/tenants/alice/insights/{used[0]}").json()
    assert shown["retrieved"] >= 1 and shown["provenance"]["status"] == "answered"
    assert shown["provenance"]["request"] == shown["meta"]["row_index"] and shown["created"]


def test_quarantine_and_delete_withhold_an_insight_from_retrieval(guard):
    ask(guard, "topic:ladders how high can I climb safely?")
    rows = settled(guard, "alice", 1)
    _, used = ask(guard, "topic:ladders how high can I climb safely?")
    target = used[0]
    assert (
        admin(guard, "POST", f"/admin/tenants/alice/insights/{target}/quarantine", json={"reason": "test"}).status_code
        == 200
    )
    _, used = ask(guard, "topic:ladders how high can I climb safely?")
    assert target not in used
    listed = {r["id"]: r for r in admin(guard, "GET", "/admin/tenants/alice/insights").json()}
    assert listed[target]["quarantined"] is True
    other = next(r["id"] for r in rows if r["id"] != target)
    assert admin(guard, "DELETE", f"/admin/tenants/alice/insights/{other}").status_code == 200
    assert other not in {r["id"] for r in admin(guard, "GET", "/admin/tenants/alice/insights").json()}
    assert admin(guard, "GET", f"/admin/tenants/alice/insights/{other}").status_code == 404
    _, used = ask(guard, "topic:ladders how high can I climb safely?")
    assert target not in used and other not in used
    assert admin(guard, "POST", "/admin/tenants/alice/insights/99999/quarantine").status_code == 404
    found = admin(guard, "GET", "/admin/tenants/alice/search", params={"q": "LADDERS"}).json()
    assert found and all("ladders" in r["scenario"] for r in found)


def test_export_then_import_warm_starts_a_bank(guard, tmp_path):
    settled(guard, "alice", 1)
    exported = admin(guard, "GET", "/admin/tenants/alice/export")
    assert exported.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(exported.content)) as tar:
        assert any(name.endswith("CURRENT") for name in tar.getnames())
    alice = admin(guard, "GET", "/admin/tenants/alice/insights").json()
    bob_before = len(admin(guard, "GET", "/admin/tenants/bob/insights").json())
    done = admin(guard, "POST", "/admin/tenants/bob/import", content=exported.content).json()
    assert done["imported"] >= len(alice)
    bob = admin(guard, "GET", "/admin/tenants/bob/insights").json()
    assert len(bob) == bob_before + done["imported"] and {r["origin"] for r in bob[bob_before:]} == {"warm"}
    bad = admin(guard, "POST", "/admin/tenants/bob/import", content=b"not a tarball")
    assert bad.status_code == 400 and "tar.gz" in bad.json()["error"]["message"]


def test_keys_and_admin_token_are_required(guard):
    with pytest.raises(openai.AuthenticationError):
        client(guard, "sk-wrong-0000").chat.completions.create(model=MODEL, messages=user("hi"))
    assert httpx.get(f"{guard.url}/v1/models").status_code == 401
    assert client(guard).models.list().data[0].id == MODEL
    assert httpx.get(f"{guard.url}/admin/tenants", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 401
    assert admin(guard, "GET", "/admin/tenants/mallory/insights").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "gpt-9", "messages": user("hi")}).encode(), 404, "does not exist"),
        (json.dumps({"model": MODEL, "messages": user("hi") * 2}).encode(), 400, "exactly one user message"),
        (
            json.dumps({"model": MODEL, "messages": user("hi", "http://example.com/a.png")}).encode(),
            400,
            "allow-image-urls",
        ),
        (
            json.dumps({"model": MODEL, "messages": user("hi", "data:image/png;base64,AAAA")}).encode(),
            400,
            "could not be read",
        ),
        (
            json.dumps({"model": MODEL, "messages": user("hi", "data:image/png;base64," + "A" * 200_000)}).encode(),
            413,
            "image",
        ),
        (b" " * 500_000, 413, "over the limit"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(guard, body, status, says):
    reply = httpx.post(f"{guard.url}/v1/chat/completions", content=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert reply.status_code == status and says in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "status", "kind_"),
    [
        (Fault(status=500, body='{"error": {"message": "boom"}}'), 502, "status_500"),
        (Fault(status=200, body="<html>not json</html>"), 502, None),
        (Fault(delay=4.0), 504, "timeout"),
    ],
)
def test_upstream_faults_are_openai_errors_and_recorded(guard, stub, fault, status, kind_):
    FAULT["answer"] = fault
    before = len(stub.requests)
    for stream in (False, True):
        reply = httpx.post(
            f"{guard.url}/v1/chat/completions",
            json={"model": MODEL, "messages": user("topic:faults anything"), "stream": stream},
            headers={"Authorization": f"Bearer {ALICE}"},
            timeout=30,
        )
        assert reply.status_code == status, reply.text
        err = reply.json()["error"]
        assert err["type"] == "upstream_error" and (kind_ is None or err["code"] == kind_)
    if status == 502 and kind_ == "status_500":
        assert len([r for r in stub.requests[before:] if kind(r) == "answer"]) == 4  # one retry each
    log = (guard.guard.root / "alice" / "requests.jsonl").read_text().splitlines()
    assert [json.loads(x)["status"] for x in log[-2:]] == ["upstream_error", "upstream_error"]
    metrics = httpx.get(f"{guard.url}/metrics").text
    assert "guard_upstream_errors_total{kind=" in metrics


def test_metrics_report_requests_latency_queue_and_insights(guard):
    ask(guard, "topic:metrics anything")
    settled(guard, "alice", 1)
    text = httpx.get(f"{guard.url}/metrics").text
    for name in (
        'guard_requests_total{status="200",tenant="alice"}',
        'guard_latency_seconds_count{stage="retrieval"}',
        'guard_latency_seconds_count{stage="upstream"}',
        'guard_latency_seconds_count{stage="total"}',
        "guard_reflection_queue_depth",
        'guard_insights_total{outcome="stored",reason="",tenant="alice"}',
    ):
        assert name in text, name
    assert httpx.get(f"{guard.url}/healthz").json()["status"] == "ok"


def test_sampling_fields_are_passed_through(guard, stub):
    seen = len(stub.requests)
    client(guard).chat.completions.create(
        model=MODEL, messages=user("topic:sampling hi"), temperature=0.3, max_tokens=7, seed=4, extra_body={"top_k": 5}
    )
    sent = next(r for r in stub.requests[seen:] if kind(r) == "answer")
    assert (sent["temperature"], sent["max_tokens"], sent["seed"], sent["top_k"]) == (0.3, 7, 4, 5)


def test_image_urls_are_fetched_only_when_allowed_and_within_the_limit(tmp_path):
    import asyncio
    import base64
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from vlmeval_echosafe.serve.app import _fetcher
    from vlmeval_echosafe.serve.chat import BadRequest, chat_request

    (tmp_path / "a.png").write_bytes(base64.b64decode(png_data_url(2).split(",", 1)[1]))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
    body = {"model": MODEL, "messages": user("what is it?", url)}
    try:
        req = asyncio.run(chat_request(body, Limits(allow_image_urls=True), _fetcher(100_000)))
        assert req.images[0] == (tmp_path / "a.png").read_bytes() and req.mimes == ["image/png"]
        with pytest.raises(BadRequest, match="over the limit") as err:
            asyncio.run(chat_request(body, Limits(allow_image_urls=True), _fetcher(100)))
        assert err.value.status == 413
        with pytest.raises(BadRequest, match="allow-image-urls"):
            asyncio.run(chat_request(body, Limits()))
    finally:
        server.shutdown()


def test_serve_refuses_bad_flags_with_a_message(tmp_path, capsys):
    from vlmeval_echosafe.launcher import main

    keys = tmp_path / "keys.yaml"
    keys.write_text("sk-alice-0001: ../etc\n")
    base = ["serve", "--upstream", "http://127.0.0.1:1/v1", "--model", MODEL, "--work-dir", str(tmp_path)]
    assert main([*base, "--keys", str(keys), "--admin-token", ADMIN]) == 2
    assert "tenant '../etc'" in capsys.readouterr().err
    keys.write_text("sk-alice-0001: alice\n")
    assert main([*base, "--keys", str(keys), "--admin-token", "short"]) == 2
    assert "--admin-token must be at least 16" in capsys.readouterr().err
