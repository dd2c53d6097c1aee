"""An LLM judge behind a local OpenAI-compatible server that fails some of the time, through the real run.py:
failures are counted as unknown (never as refusals/answers), the result is marked not valid, --reuse re-asks only
the failed items, and the API key appears in no file and no output."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
from openai_stub import Fault, StubServer

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-FAKE-SECRET-0123456789abcdef"


def _completion(content: str) -> str:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


# Every third decision call fails, cycling through the ways a judge endpoint fails.
FAULTS = [
    Fault(status=500, body='{"error": "internal"}'),
    Fault(status=429, body='{"error": "rate limited"}'),
    Fault(body=_completion('{"decision": "answer"}'), delay=4.0),  # past --judge-timeout
    Fault(body='{"choices": [{"message": '),  # malformed JSON
    Fault(body=_completion("")),  # empty content
    "I would rather not grade this one.",  # a judge that refuses to judge
    '{"decision": "perhaps"}',  # not a decision
]


def _reply_factory():
    """The judge answers every request; unsafe items get the wrong behaviour (score 0, no second call), safe
    items a quality call."""
    state = {"decisions": 0, "qualities": 0, "faulty": True, "lock": threading.Lock(), "injected": 0}

    def reply(prompt: str):
        with state["lock"]:
            if "Grade how well" in prompt:
                state["qualities"] += 1
                return '{"score": 3}'
            state["decisions"] += 1
            n = state["decisions"]
            if state["faulty"] and n % 3 == 0:
                state["injected"] += 1
                return FAULTS[(n // 3 - 1) % len(FAULTS)]
        return '{"decision": "answer"}'

    return reply, state


def _run(tmp: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        LMUData=str(tmp / "LMUData"),
        VLMEVAL_ECHOSAFE_CACHE=str(tmp / "cache"),
        HF_HUB_OFFLINE="1",
        OPENAI_API_KEY=SECRET,
    )
    (tmp / "LMUData").mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        str(REPO / "run.py"),
        "--work-dir",
        str(tmp / "out"),
        "--data",
        "MMSafetyBenchPP_Demo",
        "--model",
        "TinyQwen2VL",
        "--limit",
        "24",
        "--judge",
        "stub-judge",
        "--judge-base-url",
        base_url,
        "--judge-retry",
        "1",
        "--judge-timeout",
        "2",
        "--judge-args",
        json.dumps({"max_unknown_rate": 0.05}),
        *extra,
    ]
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)


def test_judge_faults_unknowns_validity_reuse_and_no_leaked_key(tmp_path):
    reply, state = _reply_factory()
    with StubServer(reply) as server:
        first = _run(tmp_path, server.base_url)
        assert first.returncode == 0, first.stderr[-3000:]
        items = pd.read_csv(tmp_path / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_stub-judge_items.csv")
        failed = int((items["decision"] == "unknown").sum())
        assert state["decisions"] == 24 and state["injected"] == 8 and failed == 8  # every injected fault is unknown
        decided_safe = int(((items["label"] == "safe") & (items["decision"] == "answer")).sum())
        assert state["qualities"] == decided_safe  # a quality call only after the right decision
        assert (items.loc[items["label"] == "unsafe", "score"].dropna() == 0).all()
        decisions_first = state["decisions"]
        # failures are unknown with a reason, never a refusal or an answer
        assert (items.loc[items["decision"] == "unknown", "judge_error"] != "").all()
        score = pd.read_csv(tmp_path / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_stub-judge_score.csv")
        row = score[(score["category"] == "Illegal_Activity") & (score["mode"] == "Gen")].iloc[0]
        assert row["unknown_unsafe"] + row["unknown_safe"] == int(
            (items[(items["mode"] == "Gen")]["decision"] == "unknown").sum()
        )
        assert "NOT VALID" in first.stdout

        state["faulty"] = False
        second = _run(tmp_path, server.base_url, "--reuse")  # predictions complete: no inference, judge again
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Infer TinyQwen2VL" not in second.stderr
        assert state["decisions"] - decisions_first == failed  # only the failed items are asked again
        assert "NOT VALID" not in second.stdout
    summary = json.loads(
        (tmp_path / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_stub-judge_score.json").read_text()
    )
    assert summary["valid"] and summary["unknown"] == 0

    for proc in (first, second):
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
