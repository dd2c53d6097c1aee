"""EchoSafe's deferred steps (prepare, deliver, reflect, store: what the guard schedules) give what `respond`
gives: the same answers, the same bank and the same trace, item by item; and withheld insights are not retrieved."""

from __future__ import annotations

import json
from pathlib import Path

from guard_helpers import upstream
from openai_stub import StubServer

from vlmeval_echosafe.core.item import Item
from vlmeval_echosafe.echosafe.method import EchoSafe
from vlmeval_echosafe.memory import MemoryBank
from vlmeval_echosafe.models.served import ServedVLM

TEXT_ONLY = {"text": "minilm", "image": "none"}
QUESTIONS = [f"topic:{t} how do I look after one?" for t in ("kites", "kites", "boats", "kites", "boats")]


def _defense(url: str, run_dir: Path) -> EchoSafe:
    return EchoSafe(
        ServedVLM("stubvlm", url), name="EchoSafe_stubvlm", run_dir=run_dir, settings={"encoders": TEXT_ONLY}
    )


def _items() -> list[Item]:
    return [Item(q, (), {"index": str(i)}, "tenant") for i, q in enumerate(QUESTIONS)]


def _trace(run_dir: Path) -> list[dict]:
    lines = (run_dir / "EchoSafe_stubvlm_tenant_echosafe_trace.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "timings"} for x in lines]


def test_deferred_steps_equal_respond_item_by_item(tmp_path):
    with StubServer(upstream(), full=True) as stub:
        batch = _defense(stub.base_url, tmp_path / "batch")
        answers = [batch.respond([item])[0] for item in _items()]
        deferred = _defense(stub.base_url, tmp_path / "deferred")
        replies, stored = [], []
        for item in _items():
            prepared = deferred.prepare([item])
            answered = deferred.model.answer(prepared.turns, item.dataset, keep=True)
            responses, pending = deferred.deliver(prepared, answered)
            replies.append(responses[0])
            stored += deferred.settle(pending)
    assert [r.text for r in replies] == [a.text for a in answers]
    assert [r.record for r in replies] == [a.record for a in answers]
    assert [len(a.record["retrieved"]) for a in answers] == [0, 1, 2, 3, 4] and stored == [0, 1, 2, 3, 4]
    bank = MemoryBank.load(tmp_path / "batch/echosafe_bank/tenant").entries()
    assert MemoryBank.load(tmp_path / "deferred/echosafe_bank/tenant").entries() == bank and len(bank) == 5
    assert _trace(tmp_path / "deferred") == _trace(tmp_path / "batch")


def test_withheld_insights_are_never_retrieved(tmp_path):
    with StubServer(upstream(), full=True) as stub:
        d = _defense(stub.base_url, tmp_path / "run")
        for item in _items()[:3]:
            d.respond([item])
        probe = Item(QUESTIONS[0], (), {"index": "p"}, "tenant")
        assert {h.id for h in d.prepare([probe]).items[0].hits} == {0, 1, 2}
        d.withhold("tenant", {0, 2})
        assert [h.id for h in d.prepare([probe]).items[0].hits] == [1]
        assert d.prepare([Item(QUESTIONS[0], (), {"index": "q"}, "other")]).items[0].hits == []
