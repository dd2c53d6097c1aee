"""An inner model behind an OpenAI-compatible endpoint: the served-chat adapter (concurrency, the first turn
repeated byte for byte, JSON schema or strict text, retries and failures) against a stub that injects faults, the
launcher's takeover of --base-url, and end to end through `transformers serve` serving the tiny Qwen2-VL."""

from __future__ import annotations

import argparse
import base64
import json
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from guard_helpers import kind as request_kind
from guard_helpers import text_of
from openai_stub import Fault, StubServer
from runs import run_env, run_outputs
from serve_helpers import free_port, tiny_transformers_serve
from test_echosafe import TEXT_ONLY, FakeDataset, _rows

from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE, form_schema
from vlmeval_echosafe.echosafe import EchoSafe
from vlmeval_echosafe.memory import MemoryBank
from vlmeval_echosafe.models.served import FAIL_MSG, ServedVLM
from vlmeval_echosafe.vlmevalkit.model import HostDefense

REPO = Path(__file__).resolve().parents[1]
LINES = (
    "Scenario: a request about an everyday object\nSafety signals: stated intent, ownership\nDecision: safe\n"
    "Justification: nothing in it points to harm."
)
INSIGHT = {
    "scenario": "a request about an everyday object",
    "safety_signals": ["stated intent", "ownership"],
    "decision": "safe",
    "justification": "nothing in it points to harm.",
}
RETRY_NOW = (("retry-after-ms", "10"),)  # the client's backoff, shortened for the test


def _completion(text: str) -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]})


def endpoint(schema: str, answer_fault=None, answer_delay: float = 0.0):
    """A reply function for the stub: ``schema`` enforce | refuse (400) | ignore, what a served model does with
    ``response_format``; ``answer_fault(body)`` may replace an answer with a fault."""

    def reply(body: dict) -> str | Fault:
        kind, fmt = request_kind(body), body.get("response_format")
        if fmt is not None and schema == "refuse":
            return Fault(status=400, body='{"error": {"message": "response_format is not supported"}}')
        if kind == "probe":
            return '{"greeting": "hello", "tone": "warm"}' if schema == "enforce" else "Hello there!"
        if kind == "reflect":
            return json.dumps(INSIGHT) if fmt is not None and schema == "enforce" else LINES
        fault = answer_fault(body) if answer_fault else None
        if fault is not None:
            return fault
        time.sleep(answer_delay)
        return "Here is a careful reply."

    return reply


@pytest.fixture
def ds(tmp_path):
    (tmp_path / "img").mkdir()
    return FakeDataset(tmp_path / "img", _rows(2))


def _echosafe(tmp_path: Path, server: StubServer, **served) -> HostDefense:
    inner = ServedVLM("stubvlm", server.base_url, key="sk-stub-key-0001", **served)
    return HostDefense(
        EchoSafe(inner, name="EchoSafe_stubvlm", run_dir=tmp_path / "run", settings={"encoders": TEXT_ONLY})
    )


def _trace(tmp_path: Path) -> list[dict]:
    path = tmp_path / "run" / "EchoSafe_stubvlm_MMSafetyBenchPP_Demo_echosafe_trace.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


def _by_kind(server: StubServer, kind: str) -> list[dict]:
    return [r for r in server.requests if request_kind(r) == kind]


@pytest.mark.parametrize(("schema", "decoding"), [("enforce", "json-schema"), ("refuse", "free"), ("ignore", "free")])
def test_micro_batch_goes_out_concurrently_and_the_reflection_repeats_the_first_turn(tmp_path, ds, schema, decoding):
    with StubServer(endpoint(schema, answer_delay=0.3), full=True) as server:
        d = _echosafe(tmp_path, server)
        d.begin(*ds.run())
        answers = d.generate_batch([ds.message(i) for i in range(4)], dataset=ds.dataset_name)
    assert answers == ["Here is a careful reply."] * 4
    assert server.max_in_flight == 4  # the four answers were in flight together
    cfg = json.loads((tmp_path / "run" / "EchoSafe_stubvlm_echosafe_config.json").read_text())
    assert cfg["reflection"] == {"path": "served-chat", "decoding": decoding}
    assert all(t["reflection"] == cfg["reflection"] for t in _trace(tmp_path))
    asked, reflected = _by_kind(server, "answer"), _by_kind(server, "reflect")
    assert len(asked) == len(reflected) == 4
    first_turns = {json.dumps(r["messages"][0], sort_keys=True) for r in asked}
    for r in reflected:
        assert json.dumps(r["messages"][0], sort_keys=True) in first_turns  # the first turn, byte for byte
        assert r["messages"][1] == {"role": "assistant", "content": "Here is a careful reply."}
        assert r["messages"][2] == {"role": "user", "content": REFLECT_TEMPLATE}
        assert ("response_format" in r) == (decoding == "json-schema")
        if decoding == "json-schema":
            assert r["response_format"]["json_schema"]["schema"] == form_schema()
    image = next(c for c in asked[0]["messages"][0]["content"] if c["type"] == "image_url")["image_url"]["url"]
    assert image.startswith("data:image/png;base64,")
    sent = base64.b64decode(image.split(",", 1)[1])
    assert sent in {Path(ds.img_root, f"{i}.png").read_bytes() for i in range(4)}  # the file itself, not re-encoded
    entries = MemoryBank.load(tmp_path / "run/echosafe_bank/MMSafetyBenchPP_Demo").entries()
    assert [e[0] for e in entries] == [INSIGHT] * 4


def test_a_later_micro_batch_reads_what_earlier_ones_stored(tmp_path):
    from vlmeval_echosafe.defenses.echosafe_prompts import INSIGHTS_HEADER

    (tmp_path / "img").mkdir()
    ds6 = FakeDataset(tmp_path / "img", _rows(3))
    with StubServer(endpoint("enforce"), full=True) as server:
        d = _echosafe(tmp_path, server)
        d.begin(*ds6.run())
        d.generate_batch([ds6.message(i) for i in range(4)], dataset=ds6.dataset_name)
        seen = len(server.requests)
        d.generate_batch([ds6.message(i) for i in range(4, 6)], dataset=ds6.dataset_name)
    later = [r for r in server.requests[seen:] if request_kind(r) == "answer"]
    assert len(later) == 2 and all(INSIGHTS_HEADER in text_of(r["messages"][0]) for r in later)
    assert all(INSIGHT["scenario"] in text_of(r["messages"][0]) for r in later)
    assert [len(t["retrieved"]) for t in _trace(tmp_path)] == [0, 0, 0, 0, 4, 4]


def test_rate_limits_are_retried(tmp_path, ds):
    seen = []

    def limited(body):
        seen.append(1)
        return (
            Fault(status=429, body='{"error": {"message": "slow down"}}', headers=RETRY_NOW) if len(seen) <= 3 else None
        )

    with StubServer(endpoint("ignore", answer_fault=limited), full=True) as server:
        d = _echosafe(tmp_path, server, retry=3)
        d.begin(*ds.run())
        answers = d.generate_batch([ds.message(i) for i in range(2)], dataset=ds.dataset_name)
    assert answers == ["Here is a careful reply."] * 2 and len(seen) == 5  # 3 refused, retried, then answered


def test_a_call_that_keeps_failing_is_unknown_and_never_stored(tmp_path, ds):
    """5xx on every try for one item, a timeout on every try for another: both answers are the host's failure
    string (unknown to the judges), neither is reflected on, the others go through."""

    def faults(body):
        question = text_of(body["messages"][0])
        if "steal the wallet" in question:
            return Fault(status=503, body='{"error": {"message": "overloaded"}}', headers=RETRY_NOW)
        if "find the wallet" in question:
            return Fault(body=_completion("too late"), delay=1.5)
        return None

    with StubServer(endpoint("ignore", answer_fault=faults), full=True) as server:
        d = _echosafe(tmp_path, server, retry=2, timeout=0.5)
        d.begin(*ds.run())
        answers = d.generate_batch([ds.message(i) for i in range(4)], dataset=ds.dataset_name)
    assert answers[0].startswith(FAIL_MSG) and "InternalServerError" in answers[0]
    assert answers[1].startswith(FAIL_MSG) and "Timeout" in answers[1]
    assert answers[2:] == ["Here is a careful reply."] * 2
    tries = [text_of(r["messages"][0]) for r in _by_kind(server, "answer")]
    assert sum("steal the wallet" in q for q in tries) == sum("find the wallet" in q for q in tries) == 3
    assert not any("wallet" in text_of(r["messages"][0]) for r in _by_kind(server, "reflect"))
    trace = _trace(tmp_path)
    assert [t["not_written_code"] for t in trace] == ["answer_failed", "answer_failed", None, None]
    assert len(MemoryBank.load(tmp_path / "run/echosafe_bank/MMSafetyBenchPP_Demo")) == 2


def test_an_endpoint_that_does_not_answer_stops_the_build(tmp_path):
    port = free_port()  # nothing listens here
    inner = ServedVLM("stubvlm", f"http://127.0.0.1:{port}/v1", retry=0, timeout=2)
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}.*serving 'stubvlm'"):
        EchoSafe(inner, name="EchoSafe_stubvlm", run_dir=tmp_path / "run", settings={"encoders": TEXT_ONLY})


def test_baselines_and_chat_turns_over_the_endpoint(tmp_path, ds):
    from vlmeval_echosafe.defenses.echosafe_prompts import form_budget, form_grammar
    from vlmeval_echosafe.defenses.prompts import SafetyPrompt
    from vlmeval_echosafe.models.constrained import Constraint

    with StubServer(endpoint("ignore"), full=True) as server:
        inner = ServedVLM("stubvlm", server.base_url)
        base = HostDefense(SafetyPrompt(inner, name="SafetyPrompt_stubvlm", run_dir=tmp_path / "sp"))
        base.begin(*ds.run())
        assert base.generate(ds.message(0), dataset=ds.dataset_name) == "Here is a careful reply."
        # chat turns over the endpoint: the served-chat adapter continues an answered conversation
        served = base.defense.model
        answered = served.answer([[{"type": "text", "value": "Hi"}]], None, keep=True)
        form = Constraint(form_grammar(), line_tokens=4, max_new_tokens=form_budget(4), json_schema=form_schema())
        assert [r.text for r in served.follow_up(answered, "More", None, form)] == ["Here is a careful reply."]
    assert server.requests[0]["model"] == "stubvlm" and "image_url" in json.dumps(server.requests[0])
    assert [m["role"] for m in server.requests[-1]["messages"]] == ["user", "assistant", "user"]
    assert server.requests[-1]["messages"][1]["content"] == "Here is a careful reply."
    assert server.requests[-1]["messages"][2]["content"] == "More"
    assert "sk-" not in repr(inner)


def test_resume_check_waits_for_the_endpoint_to_say_its_decoding(tmp_path):
    """Before the model is built, a served bank's decoding is unknown: only the other settings are compared; once
    built, the endpoint's decoding must match the bank's."""
    from vlmeval_echosafe.core.inner import ServedInner
    from vlmeval_echosafe.echosafe.settings import RUN_CONFIG, ResumeMismatchError, check_resume

    saved = {"k": 5, "reflection": {"path": "served-chat", "decoding": "json-schema"}}
    (tmp_path / RUN_CONFIG).write_text(json.dumps(saved))
    planned = {"k": 5, "reflection": ServedInner.planned()}
    assert planned["reflection"] == {"path": "served-chat", "decoding": None}
    later = ("reflection.decoding",)
    check_resume(tmp_path, planned, decided_later=later)
    with pytest.raises(ResumeMismatchError, match="k: 5 -> 3"):
        check_resume(tmp_path, {**planned, "k": 3}, decided_later=later)
    with pytest.raises(ResumeMismatchError, match="reflection.decoding: 'json-schema' -> 'free'"):
        check_resume(tmp_path, {"k": 5, "reflection": {"path": "served-chat", "decoding": "free"}})


# ---- the launcher's --base-url ------------------------------------------------------------------------------


def _host_args(**over) -> argparse.Namespace:
    defaults = dict(
        base_url="http://h:1/v1",
        config=None,
        key="sk-admin",
        max_tokens=2**15,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
        extra_body=None,
        timeout=1800,
        retry=6,
    )
    return argparse.Namespace(**{**defaults, **over})


def test_base_url_is_taken_over_from_the_host():
    from vlmeval_echosafe.launcher import LaunchError, take_over_base_url

    models = ["EchoSafe_tinyvlm", "EchoSafe-k3_tinyvlm", "Base_tinyvlm", "SafetyPrompt_other", "bare"]
    words = ["--data", "D", "--model", *models, "--base-url", "http://h:1/v1", "--top-k", "5"]
    served, rest = take_over_base_url(_host_args(top_k=5), models, words)
    assert sorted(served) == ["bare", "other", "tinyvlm"]
    assert served["tinyvlm"] == {
        "model": "tinyvlm",
        "base_url": "http://h:1/v1",
        "key": None,  # --key not given: the environment's key, never the host's placeholder
        "timeout": 1800,
        "retry": 6,
        "extra_body": {"top_k": 5},
    }  # no max_tokens: the host's 32768 default would exceed many servers' context
    assert rest == ["--data", "D", "--model", *models, "--top-k", "5"]
    words = ["--base-url=http://h:1/v1", "--key", "sk-given", "--max-tokens", "64", "--temperature", "0.5"]
    served, rest = take_over_base_url(_host_args(key="sk-given", max_tokens=64, temperature=0.5), ["X"], words)
    assert served["X"]["key"] == "sk-given" and served["X"]["max_tokens"] == 64 and served["X"]["temperature"] == 0.5
    assert rest == words[1:]
    assert take_over_base_url(_host_args(base_url=None), ["X"], ["--model", "X"]) == ({}, ["--model", "X"])
    with pytest.raises(LaunchError, match="--config"):
        take_over_base_url(_host_args(config="c.json"), [], ["--base-url", "u"])
    with pytest.raises(LaunchError, match="--extra-body"):
        take_over_base_url(_host_args(extra_body="[1]"), [], ["--base-url", "u"])


def test_key_comes_from_the_flag_then_the_environment(monkeypatch):
    from vlmeval_echosafe.models.served import api_key

    monkeypatch.delenv("LMDEPLOY_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key(None) == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    assert api_key(None) == "sk-openai"
    monkeypatch.setenv("LMDEPLOY_API_KEY", "sk-lmdeploy")
    assert api_key(None) == "sk-lmdeploy" and api_key("sk-flag") == "sk-flag"


def test_served_models_register_with_every_wrapper(tmp_path, monkeypatch):
    """From --base-url and from a models.yaml entry: the defenses wrap the served model and key it with the
    `served` encoders."""
    from vlmeval.config import supported_VLM

    from vlmeval_echosafe.defenses.undefended import Undefended
    from vlmeval_echosafe.vlmevalkit import registry

    root = tmp_path / "config"
    shutil.copytree(REPO / "vlmeval_echosafe" / "configs", root, dirs_exist_ok=True)
    models = yaml.safe_load((root / "wrappers/models.yaml").read_text())
    models["models"]["yamlvlm"] = {"class": "ServedVLM", "base_url": "http://h:2/v1", "model": "served-name"}
    (root / "wrappers/models.yaml").write_text(yaml.safe_dump(models))
    monkeypatch.setenv("VLMEVAL_ECHOSAFE_CONFIG", str(root))
    try:
        registry.register(served={"flagvlm": {"model": "flagvlm", "base_url": "http://h:1/v1"}})
        served_encoders = yaml.safe_load((root / "wrappers/defenses.yaml").read_text())["encoders"]["served"]
        for name, url in (("flagvlm", "http://h:1/v1"), ("yamlvlm", "http://h:2/v1")):
            own = supported_VLM[name]  # the served model itself: the plugin's one model class, undefended
            assert own.func is HostDefense and own.keywords["defense"] is Undefended
            assert own.keywords["inner_spec"]["class"] == "ServedVLM" and own.keywords["inner_spec"]["base_url"] == url
            assert supported_VLM[f"Base_{name}"] is supported_VLM[name]
            echo = supported_VLM[f"EchoSafe_{name}"].keywords
            assert echo["inner"] == name and echo["settings"]["encoders"] == served_encoders
            assert echo["inner_spec"] == own.keywords["inner_spec"]
            assert supported_VLM[f"SafetyPrompt_{name}"].keywords["inner"] == name
    finally:
        for name in [n for n in supported_VLM if n.endswith(("flagvlm", "yamlvlm"))]:
            supported_VLM.pop(name)
        monkeypatch.delenv("VLMEVAL_ECHOSAFE_CONFIG")
        registry.register()


# ---- end to end: transformers serve -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory, tiny_cache):
    """`transformers serve` on loopback, serving the tiny Qwen2-VL as `tinyvlm` (a folder beside it)."""
    with tiny_transformers_serve(tmp_path_factory.mktemp("serve")) as served:
        yield served


@pytest.fixture(scope="module")
def served_config(tmp_path_factory, tiny_clip_dir):
    """The repository's config with the `served` key encoders on a tiny CLIP (no CLIP weights offline)."""
    root = tmp_path_factory.mktemp("config")
    shutil.copytree(REPO / "vlmeval_echosafe" / "configs", root, dirs_exist_ok=True)
    defenses = yaml.safe_load((root / "wrappers/defenses.yaml").read_text())
    defenses["encoders"]["served"] = {"text": "minilm", "image": "clip", "clip_path": str(tiny_clip_dir)}
    defenses["inner_settings"]["tinyvlm"] = {"reflect_tokens": 12}
    (root / "wrappers/defenses.yaml").write_text(yaml.safe_dump(defenses))
    return root


SECRET = "sk-served-secret-4242"
ECHO = "EchoSafe_tinyvlm"
NO_REFLECTION = "EchoSafe-NoReflection_tinyvlm"  # stores the exchange: a bank the tiny model's gibberish can fill
DATA = "MMSafetyBenchPP_DemoMini"


def _served_cmd(tmp: Path, url: str, models: list[str], *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "run.py"),
        "--work-dir",
        str(tmp / "out"),
        "--data",
        DATA,
        "--model",
        *models,
        "--base-url",
        url,
        "--key",
        SECRET,
        "--judge",
        "rule",
        "--batch-size",
        "4",
        "--max-tokens",
        "16",
        "--retry",
        "2",
        *extra,
    ]


def _served_env(tmp: Path, config: Path, cache: Path) -> dict[str, str]:
    return run_env(tmp, cache, VLMEVAL_ECHOSAFE_CONFIG=str(config))


def _outputs(run_dir: Path) -> tuple[list[str], list[list], list[dict]]:
    return run_outputs(run_dir, DATA)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, transformers_serve, served_config, tiny_cache):
    url, log = transformers_serve
    tmp = tmp_path_factory.mktemp("served-run")
    before = _calls(log)
    proc = subprocess.run(
        _served_cmd(tmp, url, [ECHO, NO_REFLECTION, "Base_tinyvlm"]),
        cwd=tmp,
        env=_served_env(tmp, served_config, tiny_cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = _calls(log)
    return tmp, proc, {status: after[status] - before[status] for status in after}


def _calls(log: Path) -> dict[str, int]:
    """Chat calls the server logged, by outcome."""
    text = log.read_text()
    return {s: text.count(f'"POST /v1/chat/completions HTTP/1.1" {s}') for s in ("200 OK", "500 Internal Server Error")}


@pytest.mark.slow
def test_echosafe_and_a_baseline_through_transformers_serve(served_run):
    """The issue's command (EchoSafe, --batch-size 4, the endpoint's own name), the NoReflection ablation and the
    base row, in one run.py against `transformers serve`: predictions, scores and banks, and the server log holds
    exactly the calls the traces account for."""
    tmp, proc, calls = served_run
    run_dir = tmp / "out" / ECHO
    preds, bank, trace = _outputs(run_dir)
    assert len(preds) == 12 and all(p and FAIL_MSG not in p for p in preds)
    assert (run_dir / f"{ECHO}_{DATA}_rule_score.csv").exists()
    base = pd.read_csv(tmp / "out/Base_tinyvlm" / f"Base_tinyvlm_{DATA}.tsv", sep="\t", keep_default_na=False)
    assert len(base) == 12 and (tmp / "out/Base_tinyvlm" / f"Base_tinyvlm_{DATA}_rule_score.csv").exists()
    # transformers serve accepts response_format and ignores it: the probe sees that, the reflection is free text
    assert all(t["reflection"] == {"path": "served-chat", "decoding": "free"} for t in trace)
    assert [t["batch"]["size"] for t in trace] == [4] * 12
    # One probe per EchoSafe row, its answers and reflections, NoReflection's answers, the baseline's answers. A
    # tiny random model can write a special-token string (<|video_pad|>) that the server then refuses to read back
    # in the reflection turn (500): each such reflection is tried 1 + --retry times and counted as reflect_failed.
    codes = [t["not_written_code"] for t in trace]
    assert "answer_failed" not in codes
    assert calls["200 OK"] == 2 + 12 + (12 - codes.count("reflect_failed")) + 12 + 12
    assert calls["500 Internal Server Error"] == 3 * codes.count("reflect_failed")
    assert len(bank) == sum(t["insight_id"] is not None for t in trace)  # free-text gibberish rarely parses
    # The memory through the endpoint: every exchange stored, and each micro-batch retrieves what earlier ones
    # stored (never its own pair's).
    _, kept, steps = _outputs(tmp / "out" / NO_REFLECTION)
    assert len(kept) == 12 and [t["bank_size"] for t in steps] == [4 * (i // 4) for i in range(12)]
    assert all(t["retrieved"] for t in steps[4:]) and not any(t["retrieved"] for t in steps[:4])
    leaked = [p for p in (tmp / "out").rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert SECRET not in proc.stdout + proc.stderr and not leaked


@pytest.mark.slow
def test_killed_served_run_resumes_to_the_same_result(
    served_run, transformers_serve, served_config, tiny_cache, tmp_path
):
    """Kill run.py once its first micro-batch is checkpointed, resume with --reuse: the same predictions, bank and
    trace as the uninterrupted run."""
    url, log = transformers_serve
    full_dir, tmp = served_run[0] / "out" / ECHO, tmp_path
    env = _served_env(tmp, served_config, tiny_cache)
    run_dir = tmp / "out" / ECHO
    checkpoint = run_dir / f"01_{DATA}.pkl"
    proc = subprocess.Popen(
        _served_cmd(tmp, url, [ECHO]), cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if len(pickle.loads(checkpoint.read_bytes())) >= 4:
                    break
            except (OSError, EOFError, pickle.UnpicklingError):  # not written yet, or being written
                pass
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    assert not (run_dir / f"{ECHO}_{DATA}.tsv").exists(), "the run finished before it could be killed"
    done = len(pickle.loads(checkpoint.read_bytes()))
    assert 4 <= done < 12
    before = _calls(log)
    resumed = subprocess.run(
        _served_cmd(tmp, url, [ECHO], "--reuse"), cwd=tmp, env=env, capture_output=True, text=True, timeout=900
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    answered = _calls(log)["200 OK"] - before["200 OK"]
    assert 1 + (12 - done) <= answered <= 1 + 2 * (12 - done)  # the probe, and only the rows still to do
    assert _outputs(run_dir) == _outputs(full_dir)
