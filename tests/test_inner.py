"""The inner-model protocol: EchoSafe's reflection sees the same conversation on every kind of inner model, the
host's turn-dropping retry never runs, and a failed answer is never reflected on."""

from __future__ import annotations

import json
import re

import pytest
from test_echosafe import TEXT_ONLY, FakeDataset, ScriptedVLM, _rows, _trace
from vlmeval.vlm.base import BaseModel

from vlmeval_echosafe.core import inner as inner_mod
from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE
from vlmeval_echosafe.echosafe import EchoSafe
from vlmeval_echosafe.memory import MemoryBank
from vlmeval_echosafe.vlmevalkit.inner import HostInner
from vlmeval_echosafe.vlmevalkit.model import HostDefense

REFLECTION = (
    "Scenario: a request about an object\nSafety signals: intent, context\nDecision: safe\n"
    "Justification: nothing in it points to harm."
)


class ChatOnly(BaseModel):
    """A host model with multi-turn chat whose replies come from the plugin's tiny model (same decoding), and
    which records every conversation it is given."""

    is_api = False

    def __init__(self, vlm, fail_chat: bool = False):
        super().__init__()
        self.vlm, self.fail_chat, self.chats = vlm, fail_chat, []

    def generate_inner(self, message, dataset=None):
        return self.vlm.generate_turns([{"role": "user", "content": message}])

    def chat_inner(self, message, dataset=None):
        self.chats.append([dict(t) for t in message])
        if self.fail_chat:
            raise RuntimeError("backend down")
        return REFLECTION


@pytest.fixture
def ds(tmp_path):
    (tmp_path / "img").mkdir()
    return FakeDataset(tmp_path / "img", _rows(1))


def _echosafe(tmp_path, model, sub: str) -> HostDefense:
    """EchoSafe around ``model`` as the host runs it: a VLMEvalKit model through its adapter (HostInner), the
    plugin's backend as it is."""
    inner = HostInner(model) if isinstance(model, BaseModel) else model
    d = EchoSafe(inner, name="EchoSafe_Scripted", run_dir=tmp_path / sub / "run", settings={"encoders": TEXT_ONLY})
    return HostDefense(d)


def _collapse_image_tokens(text: str) -> str:
    return re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", text)


def test_reflection_sees_the_same_conversation_on_the_plugin_backend_and_a_chat_model(
    tiny_qwen2vl_vlm, tmp_path, ds, monkeypatch
):
    vlm = tiny_qwen2vl_vlm
    sessions = []
    follow_up = inner_mod.SessionInner.follow_up

    def keep(self, answered, *args, **kwargs):
        sessions.append(answered.state)
        return follow_up(self, answered, *args, **kwargs)

    monkeypatch.setattr(inner_mod.SessionInner, "follow_up", keep)
    plugin = _echosafe(tmp_path, vlm, "plugin")
    plugin.begin(*ds.run())
    plugin_answer = plugin.generate(ds.message(0), dataset=ds.dataset_name)

    chat_model = ChatOnly(vlm)
    chat = _echosafe(tmp_path, chat_model, "chat")
    assert chat.defense.model.path == "chat" and plugin.defense.model.path == "kv-session"
    chat.begin(*ds.run())
    assert chat.generate(ds.message(0), dataset=ds.dataset_name) == plugin_answer
    (turns,) = chat_model.chats
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == [{"type": "text", "value": REFLECT_TEMPLATE}]
    assert turns[1]["content"] == [{"type": "text", "value": plugin_answer}]

    # The chat model's three turns, rendered with the plugin model's chat template, are exactly the conversation
    # the plugin backend's session continued (its ids hold the expanded image tokens and then the reflection).
    rendered, _, _ = vlm._render(turns)
    (session,) = sessions
    continued = vlm.processor.tokenizer.decode(session.real_ids(0)[0])
    assert _collapse_image_tokens(continued).startswith(_collapse_image_tokens(rendered))
    for run in ("plugin", "chat"):
        trace = [json.loads(x) for x in (tmp_path / run / "run").glob("*_echosafe_trace.jsonl").__next__().open()]
        assert trace[0]["reflection"]["path"] == ("kv-session" if run == "plugin" else "chat")


def test_a_failed_chat_call_is_a_failed_reflection_never_a_shorter_conversation(tiny_qwen2vl_vlm, tmp_path, ds):
    model = ChatOnly(tiny_qwen2vl_vlm, fail_chat=True)
    d = _echosafe(tmp_path, model, "x")
    d.begin(*ds.run())
    d.generate(ds.message(0), dataset=ds.dataset_name)
    assert [len(c) for c in model.chats] == [3]  # one call with all three turns; no retry with fewer
    (t,) = [json.loads(x) for x in next((tmp_path / "x" / "run").glob("*_echosafe_trace.jsonl")).open()]
    assert t["not_written_code"] == "reflect_failed" and "backend down" in t["not_written"]


def test_one_message_path_holds_the_answer_turn_the_answer_and_the_request(tmp_path, ds):
    model = ScriptedVLM()
    d = _echosafe(tmp_path, model, "")
    assert d.defense.model.path == "one-message"
    d.begin(*ds.run())
    d.generate(ds.message(0), dataset=ds.dataset_name)
    answer_prompt, reflection_prompt = model.prompts
    assert reflection_prompt.startswith(f"The request you were given:\n{answer_prompt}\n\nYour reply:\n")
    assert reflection_prompt.endswith(REFLECT_TEMPLATE)


@pytest.mark.parametrize("failure", ["Failed to obtain answer via API.", "", "   "])
def test_no_insight_from_a_failed_answer(tmp_path, ds, failure):
    class Failing(ScriptedVLM):
        def generate_inner(self, message, dataset=None):
            text = super().generate_inner(message, dataset)
            return text if "Reflect on the request" in text or "Scenario:" in text else failure

    d = _echosafe(tmp_path, Failing(), "")
    d.begin(*ds.run())
    d.generate(ds.message(0), dataset=ds.dataset_name)
    (t,) = _trace(tmp_path)
    assert t["insight_id"] is None and t["not_written_code"] == "answer_failed"
    assert len(MemoryBank.load(tmp_path / "run/echosafe_bank/MMSafetyBenchPP_Demo")) == 0
