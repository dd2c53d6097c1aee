"""KV-cache sessions: continuing a conversation from the cache gives exactly what a full re-prefill of the same
token ids gives (greedy tokens, free and grammar-constrained), for every tiny family (the Qwen ones keep a
multimodal rope state on the model, saved and restored per session)."""

import json

import pytest
import torch
from conftest import FAMILIES

REFLECT = "Summarise the request above in general terms."


def _continued_ids(vlm, session, text):
    """The session's ids + the tokens of ``text``: what a cold prefill of the continued conversation reads."""
    new = torch.tensor([vlm._new_tokens(session, 0, text)], dtype=session.ids.dtype)
    return torch.cat([session.real_ids(0), new], dim=1)


def _reference_inputs(vlm, turns, ids):
    """Processor inputs of `turns` (image included) with `ids` in place of the prompt ids: a cold prefill."""
    inputs = vlm.prepare_inputs(turns)
    length, extra = inputs["input_ids"].shape[1], ids.shape[1] - inputs["input_ids"].shape[1]
    for key, value in list(inputs.items()):
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, length) and key != "input_ids":
            fill = (
                torch.ones(1, extra, dtype=value.dtype)
                if key == "attention_mask"
                else torch.zeros(1, extra, dtype=value.dtype)
            )
            inputs[key] = torch.cat([value, fill], dim=1)
    inputs["input_ids"] = ids
    return inputs


@pytest.mark.parametrize("kind", FAMILIES)
def test_extend_equals_full_prefill(tiny_vlms, kind, tiny_image, tmp_path):
    """Also when another conversation (other image size, other rope state) ran between answer and follow-up."""
    from PIL import Image

    vlm = tiny_vlms(kind)
    turns = [
        {
            "role": "user",
            "content": [{"type": "image", "value": tiny_image}, {"type": "text", "value": "What is this?"}],
        }
    ]
    answer, session = vlm.start(turns, max_new_tokens=10)
    assert answer == vlm.generate_turns(turns, max_new_tokens=10)
    Image.new("RGB", (200, 80), (30, 160, 90)).save(tmp_path / "other.png")
    other = [{"type": "image", "value": str(tmp_path / "other.png")}, {"type": "text", "value": "A longer one " * 5}]
    vlm.generate_turns([{"role": "user", "content": other}], max_new_tokens=3)
    text = vlm.next_turn_text(session, REFLECT) + "Scenario:"
    ids = _continued_ids(vlm, session, text)
    cached_before = session.cache.get_seq_length()
    got = vlm.extend(session, text, max_new_tokens=8, stop=None)
    assert session.ids.shape[1] > ids.shape[1] and session.cache.get_seq_length() > cached_before
    vlm._set_rope_state(None)
    with torch.inference_mode():
        ref = vlm.model.generate(**_reference_inputs(vlm, turns, ids), **vlm.generation_kwargs(8))
    assert got == vlm.processor.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.parametrize("kind", FAMILIES)
def test_constrained_extend_equals_full_prefill_and_parses(tiny_vlms, kind, tiny_image):
    """The reflection form decoded with jump-forward from the cache is what `generate` decodes one token per step
    from a cold prefill under the same masks, and it always has the form's four lines."""
    from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE, form_budget, form_grammar
    from vlmeval_echosafe.defenses.insight import parse_reflection
    from vlmeval_echosafe.models.constrained import Constraint, FormProcessor

    vlm = tiny_vlms(kind)
    turns = [
        {"role": "user", "content": [{"type": "image", "value": tiny_image}, {"type": "text", "value": "Is it safe?"}]}
    ]
    form = Constraint(form_grammar(), line_tokens=5, max_new_tokens=form_budget(5))
    _, session = vlm.start(turns, max_new_tokens=6)
    text = vlm.next_turn_text(session, REFLECT_TEMPLATE)
    ids = _continued_ids(vlm, session, text)
    before = dict(vlm.decoded)
    got = vlm.extend(session, text, max_new_tokens=None, stop=None, constraint=form)
    tokens, forwards = (vlm.decoded[k] - before.get(k, 0) for k in ("follow_up_tokens", "follow_up_forwards"))
    parsed = parse_reflection(got)  # raises unless all four fields are there
    assert parsed["decision"] in ("safe", "unsafe")
    assert all(len(line) > 0 for line in got.splitlines())
    vlm._set_rope_state(None)
    inputs = _reference_inputs(vlm, turns, ids)
    reference = FormProcessor(vlm.form_rows(form, 1), [0])
    with torch.inference_mode():
        ref = vlm.model.generate(
            **inputs,
            logits_processor=[reference],
            **vlm.generation_kwargs(form.max_new_tokens, answer=False),
        )
    assert got == vlm.processor.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True).strip()
    # jump-forward: fewer forward passes than tokens (the labels are written without one each)
    assert forwards < tokens


def vision_tower(vlm):
    """The module that encodes pixels: `visual` for the Qwen families, `vision_tower` for LLaVA and InternVL."""
    inner = vlm.model.model
    return getattr(inner, "visual", None) or inner.vision_tower


@pytest.mark.parametrize("kind", FAMILIES)
def test_echosafe_reflection_never_reencodes_the_image(tiny_vlms, kind, tmp_path):
    """Per item the vision tower runs once: the memory key's image part hands its features to the answer's
    prefill, and the reflection continues from the answer's cache."""
    from test_echosafe import FakeDataset, _rows

    from vlmeval_echosafe.echosafe import EchoSafe
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    vlm = tiny_vlms(kind)
    vlm._features.clear()  # the model is shared: earlier tests may have left keys' features behind
    (tmp_path / "img").mkdir()
    ds = FakeDataset(tmp_path / "img", _rows(1))
    d = HostDefense(
        EchoSafe(
            vlm,
            name="EchoSafe_Tiny",
            run_dir=tmp_path / "run",
            settings={"encoders": {"text": "minilm", "image": "inner"}, "reflect_tokens": 6},
        )
    )
    d.begin(*ds.run())
    calls = []
    hook = vision_tower(vlm).register_forward_hook(lambda *a: calls.append(1))
    try:
        for i in range(2):
            d.generate(ds.message(i), dataset=ds.dataset_name)
    finally:
        hook.remove()
    assert len(calls) == 2
    trace = [
        json.loads(x)
        for x in (tmp_path / "run/EchoSafe_Tiny_MMSafetyBenchPP_Demo_echosafe_trace.jsonl").read_text().splitlines()
    ]
    assert all("reflect" in t["timings"] for t in trace)
