"""ETA's best-of-N search prefills the prompt (text + image) once and continues its KV cache for every sentence:
it must give the same candidates, token for token, as re-prefilling prompt + image + kept text each sentence (the
search before the cache was kept; here a test-local reference), on every tiny family, with and without an image."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from conftest import FAMILIES

from vlmeval_echosafe.models import eta_search


class _Reward:
    """Deterministic stand-in for the reward model: longer answers score higher."""

    def score(self, prompt: str, text: str) -> float:
        return float(len(text))


class _Clip:
    def score(self, texts: list[str], image: str) -> list[float]:
        return [float(len(t) % 5) for t in texts]


def _settings(top_k: int) -> SimpleNamespace:
    return SimpleNamespace(
        best_of_n=3,
        max_new_tokens=18,
        sentence_tokens=6,
        top_k=top_k,
        temperature=1.0,
        seed=0,
        search_rm_prompt="",
        clip_weight=1.0,
    )


def _turns(image: str | None) -> list[dict]:
    content = [{"type": "image", "value": image}] if image else []
    return [{"role": "user", "content": [*content, {"type": "text", "value": "Describe the picture."}]}]


def _search(vlm: Any, image: str | None, top_k: int, monkeypatch: pytest.MonkeyPatch, cached: bool) -> tuple:
    """Run the search, recording every sentence's sampled ids; ``cached=False`` swaps in the re-prefilling reference."""
    import torch

    sampled: list[list[list[int]]] = []
    text, images, _ = vlm._render(_turns(image))
    text += " " if text.endswith(":") else ""
    prompt = vlm.processor(text=[text], images=images or None, return_tensors="pt")
    sample = eta_search._sample

    def reference(vlm: Any, ids: Any, cache: Any, stop: Any, max_new_tokens: int, settings: Any, index: int) -> Any:
        # the whole prompt + image + kept text read again by every row, no cache; per-token inputs (Qwen's
        # mm_token_type_ids) are 0 over the kept text, as the processor would write them
        n, length = ids.shape[0], prompt["input_ids"].shape[1]
        inputs = {}
        for key, value in prompt.items():
            if value.dim() == 2 and value.shape == prompt["input_ids"].shape:
                inputs[key] = torch.cat([value, value.new_zeros(1, ids.shape[1] - length)], dim=1).repeat(n, 1)
            else:
                inputs[key] = torch.cat([value] * n)
        inputs["input_ids"], inputs["attention_mask"] = ids, torch.ones_like(ids)
        vlm._set_rope_state(None)
        kwargs = {**vlm.generation_kwargs(max_new_tokens, answer=False), "do_sample": True, "top_k": settings.top_k}
        from transformers import StoppingCriteriaList

        with torch.random.fork_rng():
            torch.manual_seed(settings.seed * 100003 + index)
            with torch.inference_mode():
                out = vlm.model.generate(
                    **inputs,
                    temperature=settings.temperature,
                    stopping_criteria=StoppingCriteriaList([eta_search._SentenceEnd(stop)]),
                    **kwargs,
                )
        return out[:, ids.shape[1] :]

    def recording(*args: Any) -> Any:
        new = (sample if cached else reference)(*args)
        sampled.append(new.tolist())
        return new

    monkeypatch.setattr(eta_search, "_sample", recording)
    stops = eta_search.sentence_end_ids(vlm.processor.tokenizer, list(vlm.eos_token_ids))
    found = eta_search.best_of_n(
        vlm, _turns(image), image, "As an AI assistant,", _Reward(), _Clip(), _settings(top_k), stops
    )
    monkeypatch.undo()
    return found, sampled


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text"])
@pytest.mark.parametrize("kind", FAMILIES)
def test_cached_search_equals_the_re_prefilling_one(kind, with_image, tiny_vlms, tiny_image, monkeypatch) -> None:
    vlm = tiny_vlms(kind)
    image = tiny_image if with_image else None
    for top_k in (1, 4):  # greedy-like, and sampling from the same seeded draws
        cached, cached_ids = _search(vlm, image, top_k, monkeypatch, cached=True)
        plain, plain_ids = _search(vlm, image, top_k, monkeypatch, cached=False)
        assert cached_ids == plain_ids, (kind, top_k)
        assert cached.sentences == plain.sentences and cached.text == plain.text
        assert len(cached.sentences) >= 2  # the cache was continued past the first sentence
        assert vlm._rope_state() is None  # the shared model is left as found


def test_kept_text_is_tokenized_on_its_own_after_the_prompt(tiny_vlms, tiny_image, monkeypatch) -> None:
    """LLaVA's prompt ends "ASSISTANT: ": tokenized together with the kept text, the space merges into the next word,
    so the prompt's ids are no prefix of the joint ids. The search appends the kept text's own ids instead."""
    import torch

    vlm = tiny_vlms("llava_sp")
    tok = vlm.processor.tokenizer
    text, images, _ = vlm._render(_turns(tiny_image))
    text += " "
    kept = "As an AI assistant,"
    prompt = vlm.processor(text=[text], images=images, return_tensors="pt")["input_ids"][0].tolist()
    joint = vlm.processor(text=[text + kept], images=images, return_tensors="pt")["input_ids"][0].tolist()
    assert joint[: len(prompt)] != prompt  # the boundary this test is about does occur

    seen: list[list[int]] = []
    sample = eta_search._sample

    def spy(vlm: Any, ids: torch.Tensor, *args: Any) -> Any:
        seen.append(ids[0].tolist())
        return sample(vlm, ids, *args)

    monkeypatch.setattr(eta_search, "_sample", spy)
    stops = eta_search.sentence_end_ids(tok, list(vlm.eos_token_ids))
    eta_search.best_of_n(vlm, _turns(tiny_image), tiny_image, kept, _Reward(), _Clip(), _settings(1), stops)
    assert seen[0] == prompt + tok(kept, add_special_tokens=False)["input_ids"]
