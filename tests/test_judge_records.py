import json

from openai_stub import StubServer

from vlmeval_echosafe.judges import Judge, JudgeItem, Judgement, LLMJudge
from vlmeval_echosafe.judges.records import judge_all


class CountingJudge(Judge):
    name, refusal_only, version = "counting", False, "v1"

    def __init__(self, decisions):
        self.decisions, self.calls = decisions, []

    def judge(self, item):
        self.calls.append(item.index)
        d = self.decisions[item.index]
        return Judgement(d, None if d == "unknown" else 3.0, raw=d, error="flaky" if d == "unknown" else None)


ITEMS = [JudgeItem(str(i), f"q{i}", f"r{i}", "safe") for i in range(4)]


def test_records_are_reused_and_unknowns_reasked(tmp_path):
    path = tmp_path / "j.jsonl"
    first = CountingJudge({"0": "answer", "1": "unknown", "2": "refuse", "3": "answer"})
    out = judge_all(first, ITEMS, path, nproc=2)
    assert [v.decision for v in out] == ["answer", "unknown", "refuse", "answer"]
    assert sorted(first.calls) == ["0", "1", "2", "3"]
    second = CountingJudge({"0": "x", "1": "answer", "2": "x", "3": "x"})
    out = judge_all(second, ITEMS, path)
    assert second.calls == ["1"]  # only the failed item is asked again
    assert [v.decision for v in out] == ["answer", "answer", "refuse", "answer"]
    # a changed response invalidates its record
    changed = [ITEMS[0], JudgeItem("1", "q1", "another answer", "safe"), *ITEMS[2:]]
    third = CountingJudge({"0": "x", "1": "refuse", "2": "x", "3": "x"})
    judge_all(third, changed, path)
    assert third.calls == ["1"]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "j.jsonl"
    judge_all(CountingJudge({str(i): "answer" for i in range(4)}), ITEMS, path)
    with path.open("a") as fh:
        fh.write('{"key": "abc", "decis')  # crash mid-write
    again = CountingJudge({str(i): "x" for i in range(4)})
    assert [v.decision for v in judge_all(again, ITEMS, path)] == ["answer"] * 4 and again.calls == []


def test_llm_judge_over_local_openai_compatible_server(tmp_path, monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "LOCAL_LLM"):
        monkeypatch.delenv(var, raising=False)
    replies = {
        "q-good": '{"decision": "refuse", "score": 4, "reason": "explained"}',
        "q-bad": "I will not grade this.",
        "q-range": '{"decision": "answer", "score": 9}',
    }

    def reply(prompt):
        return next(v for k, v in replies.items() if k in prompt)

    items = [
        JudgeItem("0", "q-good", "I can't help with that.", "unsafe"),
        JudgeItem("1", "q-bad", "Sure.", "safe"),
        JudgeItem("2", "q-range", "Sure.", "safe"),
        JudgeItem("3", "q-empty", "", "safe"),
    ]
    with StubServer(reply) as server:
        judge = LLMJudge(
            "stub-judge", api_base=f"{server.base_url}/chat/completions", key="sk-test", retry=1, nproc=2, verbose=False
        )
        out = judge_all(judge, items, tmp_path / "j.jsonl", nproc=2)
        assert len(server.prompts) == 3  # the empty prediction never reaches the judge
    assert (out[0].decision, out[0].score) == ("refuse", 4.0)
    assert [v.decision for v in out[1:]] == ["unknown"] * 3
    lines = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert {rec["index"]: rec["error"] for rec in lines}["2"] == "score 9 outside 0-5"
