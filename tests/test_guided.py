"""Guided generation on the backend (`complete`, `choose`): prefill, stop, and scoring mechanics."""

from __future__ import annotations

import pytest
import torch

FIXTURES = ["tiny_qwen2vl_vlm", "tiny_llava_vlm"]


def _turns(image: str) -> list[dict]:
    """A reflection-shaped conversation: the image sits in the first user turn only."""
    return [
        {
            "role": "user",
            "content": [{"type": "image", "value": image}, {"type": "text", "value": "What is it?"}],
        },
        {"role": "assistant", "content": "A picture of a cat."},
        {"role": "user", "content": [{"type": "text", "value": "Please reflect on your previous answer."}]},
    ]


class _ForwardSpy:
    """Records the input_ids of every forward call of a model while active."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.calls = model, []

    def __enter__(self) -> _ForwardSpy:
        hook = lambda module, args, kwargs: self.calls.append(kwargs.get("input_ids"))  # noqa: E731
        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_complete_prefills_the_prefix(fixture: str, tiny_image: str, request) -> None:
    vlm = request.getfixturevalue(fixture)
    turns, prefix = _turns(tiny_image), "Scenario:"
    with _ForwardSpy(vlm.model) as spy:
        text = vlm.complete(turns, prefix, max_new_tokens=8)
    assert isinstance(text, str) and "\n" not in text and text == text.strip()
    assert vlm.complete(turns, prefix, max_new_tokens=8) == text
    fed = spy.calls[0][0].tolist()
    prompt = vlm.prepare_inputs(turns)["input_ids"][0].tolist()
    prefix_ids = vlm.processor.tokenizer(prefix, add_special_tokens=False).input_ids
    assert fed == prompt + prefix_ids


@pytest.mark.parametrize("fixture", FIXTURES)
def test_complete_cuts_and_stops_at_stop(fixture: str, tiny_image: str, request) -> None:
    vlm = request.getfixturevalue(fixture)
    turns, prefix = _turns(tiny_image), "Decision:"
    with _ForwardSpy(vlm.model) as spy:
        full = vlm.complete(turns, prefix, max_new_tokens=16, stop=None)
    n_full = len(spy.calls)
    assert len(full) > 4  # random weights never emit end-of-turn early here (suppressed specials)
    stop = full.strip()[2]  # a character the greedy continuation reaches after a few tokens
    with _ForwardSpy(vlm.model) as spy:
        cut = vlm.complete(turns, prefix, max_new_tokens=16, stop=stop)
    assert cut == full.split(stop, 1)[0].strip() and stop not in cut
    assert len(spy.calls) < n_full  # generation halted at the stop string, not just the text


def _manual_logprob(vlm, image: str, prefix: str, option: str) -> float:
    """Log-likelihood of the option tokens after `prefix`, from a string prompt through the processor."""
    from PIL import Image

    chat = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A picture of a cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "Please reflect on your previous answer."}]},
    ]
    text = vlm.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    tok = vlm.processor.tokenizer
    prefix_ids = tok(prefix, add_special_tokens=False).input_ids
    joint_ids = tok(prefix + option, add_special_tokens=False).input_ids
    assert joint_ids[: len(prefix_ids)] == prefix_ids  # a clean boundary, so the option's tokens are known
    n = len(joint_ids) - len(prefix_ids)
    inputs = vlm.processor(
        text=[text + prefix + option], images=[Image.open(image).convert("RGB")], return_tensors="pt"
    )
    with torch.inference_mode():
        logprobs = vlm.model(**inputs).logits[0].float().log_softmax(-1)
    ids = inputs["input_ids"][0]
    return sum(logprobs[i - 1, ids[i]].item() for i in range(len(ids) - n, len(ids)))


@pytest.mark.parametrize("fixture", FIXTURES)
def test_choose_agrees_with_manual_log_likelihood(fixture: str, tiny_image: str, request) -> None:
    vlm = request.getfixturevalue(fixture)
    turns, prefix, options = _turns(tiny_image), "Decision:", [" safe", " unsafe"]
    manual = [_manual_logprob(vlm, tiny_image, prefix, option) for option in options]
    scores = vlm.option_logprobs(turns, prefix, options)
    # Tokens shared by all options are left out of the scores: compare differences, which they cannot change.
    assert scores[0] - scores[1] == pytest.approx(manual[0] - manual[1], abs=1e-4)
    assert manual[0] != pytest.approx(manual[1], abs=1e-3)  # a meaningful test: no near-tie
    chosen = vlm.choose(turns, prefix, options)
    assert chosen == options[manual.index(max(manual))]
    assert vlm.choose(turns, prefix, options) == chosen
    assert vlm.choose(turns, prefix, options[::-1]) == chosen


@pytest.mark.parametrize("fixture", FIXTURES)
def test_choose_scoring_ignores_where_prefix_and_option_meet(fixture: str, tiny_image: str, request) -> None:
    vlm = request.getfixturevalue(fixture)
    turns = _turns(tiny_image)
    # Same texts, split differently between prefix and option: the trailing space merges into the option.
    assert vlm.option_logprobs(turns, "Decision: ", ["safe", "unsafe"]) == pytest.approx(
        vlm.option_logprobs(turns, "Decision:", [" safe", " unsafe"]), abs=1e-5
    )


def test_choose_ties_and_bad_arguments(tiny_llava_vlm, tiny_image: str) -> None:
    turns = _turns(tiny_image)
    scores = tiny_llava_vlm.option_logprobs(turns, "Decision:", [" safe", " safe"])
    assert scores[0] == scores[1] == 0.0  # identical options: nothing left to score after the shared tokens
    assert tiny_llava_vlm.choose(turns, "Decision:", [" yes", " yes"]) == " yes"
    assert tiny_llava_vlm.choose(turns, "Decision:", [" only"]) == " only"
    with pytest.raises(ValueError):
        tiny_llava_vlm.choose(turns, "Decision:", [])
