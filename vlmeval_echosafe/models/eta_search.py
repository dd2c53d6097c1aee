"""ETA's alignment step on the plugin's transformers backend: the answer starts with a safety prefix and grows one
sentence at a time, each sentence the best of N sampled candidates by the reward model (plus, from the second
sentence on, CLIP's score of the sentence against the image), following the public code (DripNowhy/ETA,
``generate/eta_generation.py``, ``base_class.py``):

- candidates are sampled from the top-k tokens at temperature ``temperature`` (the code's ``beta``) until a
  sentence ends (a token ending in ".") or the model ends its answer, at most ``sentence_tokens`` tokens;
- a candidate's score is the reward model's score of (``rm_prompt``, prefix + answer so far + candidate), plus
  ``clip_weight / sentence_index`` times CLIP(candidate sentence, image) from the second sentence on, unless a
  candidate ended the answer (then reward only), and reward only for an item without an image;
- the best candidate is kept, and the search goes on until the answer ends or ``max_new_tokens`` are spent.

The rendered prompt (text + image) is prefilled once per item and its KV cache reused for every sentence: each
sentence's N candidates are one batch continuing a copy of that cache expanded to N rows, so only the kept text and
the new tokens are computed (pixels are not passed again: LLaVA-style models would scatter the image features anew).

Deviations (RECONSTRUCTION): each sentence re-reads the kept text after the cached prompt (the code keeps the chosen
candidate's KV cache, so it reads it once); the kept text is tokenized on its own and appended to the prompt's ids
(a joint tokenization may merge tokens across the boundary, and the prompt's cache must stay a prefix); the
sentence end is any token whose text ends in "." (the code checks LLaMA's "." token id); sampling is seeded per
sentence (``seed``) so runs repeat. ``prompt_tokens`` counts the tokens read: the prompt once, then per sentence N
times the uncached tail (the prompt's last id and the kept text).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SearchResult:
    text: str
    sentences: list[dict[str, Any]] = field(default_factory=list)  # per sentence: candidates' scores, the pick
    forward_passes: int = 0  # per sampled row (a pass over N candidates counts N)
    new_tokens: int = 0
    prompt_tokens: int = 0  # tokens read, not sampled: the prompt once, then per sentence N x the uncached tail


class _SentenceEnd:
    """Per-row stop: the last token ends a sentence or the answer."""

    def __init__(self, stop_ids: Any) -> None:
        self.stop_ids = stop_ids

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.isin(input_ids[:, -1], self.stop_ids)


def sentence_end_ids(tokenizer: Any, eos: list[int]) -> set[int]:
    """Token ids whose text ends a sentence (ends in ".") or ends the answer."""
    vocab = len(tokenizer)
    ends = {i for i in range(vocab) if tokenizer.decode([i]).rstrip().endswith(".")}
    return ends | set(eos)


def best_of_n(
    vlm: Any,
    turns: list[dict],
    image: str | None,
    prefix: str,
    reward: Any,
    clip: Any,
    settings: Any,
    stop_ids: set[int],
) -> SearchResult:
    """The aligned answer to ``turns`` (one conversation) under ETA's sentence-level best-of-N."""
    import torch

    text, images, _ = vlm._render(turns)
    text += " " if text.endswith(":") else ""  # "ASSISTANT:" templates put a space before the answer
    eos = set(vlm.eos_token_ids)
    stop = torch.tensor(sorted(stop_ids), device=vlm.model.device)
    n, kept, spent, index = settings.best_of_n, prefix, 0, 1
    budget = settings.max_new_tokens or vlm.max_new_tokens
    tok = vlm.processor.tokenizer
    prompt_ids, cache, rope = prefill_prompt(vlm, text, images)
    result = SearchResult("", prompt_tokens=prompt_ids.shape[1])
    while spent < budget:
        kept_ids = tok(kept, add_special_tokens=False, return_tensors="pt")["input_ids"].to(prompt_ids.device)
        ids = torch.cat([prompt_ids, kept_ids], dim=1).repeat(n, 1)
        rows = copy.deepcopy(cache)
        rows.batch_repeat_interleave(n)
        vlm._set_rope_state(None if rope is None else rope.repeat_interleave(n, dim=0))
        new = _sample(vlm, ids, rows, stop, min(settings.sentence_tokens, budget - spent), settings, index)
        result.forward_passes += n * new.shape[1]
        result.prompt_tokens += n * (ids.shape[1] - cache.get_seq_length())
        candidates = []
        for row in range(n):
            row_ids = new[row].tolist()
            length = next((k + 1 for k, t in enumerate(row_ids) if t in stop_ids), len(row_ids))
            body = [t for t in row_ids[:length] if t not in eos]
            candidates.append(
                {
                    "text": tok.decode(body, skip_special_tokens=True),
                    "tokens": length,
                    "ended": any(t in eos for t in row_ids[:length]),
                }
            )
        result.new_tokens += sum(c["tokens"] for c in candidates)
        for c in candidates:
            c["reward"] = reward.score(settings.search_rm_prompt, (kept + c["text"]).strip())
        use_clip = image is not None and index > 1 and not any(c["ended"] for c in candidates)
        clip_scores = clip.score([c["text"].strip() for c in candidates], image) if use_clip else [None] * n
        for c, s in zip(candidates, clip_scores, strict=True):
            c["clip"] = s
            c["score"] = c["reward"] + (settings.clip_weight / index * s if s is not None else 0.0)
        best = max(range(n), key=lambda k: candidates[k]["score"])
        result.sentences.append({"candidates": candidates, "chosen": best})
        kept += candidates[best]["text"]
        spent += candidates[best]["tokens"]
        index += 1
        if candidates[best]["ended"]:
            break
    vlm._set_rope_state(None)
    result.text = kept.strip()
    return result


def prefill_prompt(vlm: Any, text: str, images: list) -> tuple[Any, Any, Any]:
    """Read the rendered prompt (text + image) once: returns its ids (1 x L), the KV cache of all but its last id
    (so every sentence feeds at least one token, even with nothing kept yet) and the rope state (Qwen's mrope
    ``rope_deltas``, None elsewhere) that continuations without pixels need."""
    import torch
    from transformers import DynamicCache

    inputs = vlm.processor(text=[text], images=images or None, return_tensors="pt").to(vlm.model.device)
    ids = inputs["input_ids"]
    # per-token inputs (ids, mask, Qwen's mm_token_type_ids) lose the last id; pixels and grids stay whole
    head = {k: v[:, :-1] if v.dim() == 2 and v.shape == ids.shape else v for k, v in inputs.items()}
    vlm._set_rope_state(None)
    with torch.inference_mode():
        out = vlm.model(**head, cache=DynamicCache(config=vlm.model.config), use_cache=True)
    return ids, out.past_key_values, vlm._rope_state()


def _sample(vlm: Any, ids: Any, cache: Any, stop: Any, max_new_tokens: int, settings: Any, index: int) -> Any:
    """One sentence's N candidates continuing ``cache`` (which holds all of ``ids`` but a tail): top-k sampling at
    ``settings.temperature``, seeded per sentence so runs repeat, each row stopping at its sentence end. Returns the
    new tokens (N x T)."""
    import torch
    from transformers import StoppingCriteriaList

    kwargs = {
        **vlm.generation_kwargs(max_new_tokens, answer=False),
        "do_sample": True,
        "top_k": settings.top_k,
        "temperature": settings.temperature,
    }
    with torch.random.fork_rng(devices=[vlm.model.device] if vlm.model.device.type == "cuda" else []):
        torch.manual_seed(settings.seed * 100003 + index)
        with torch.inference_mode():
            out = vlm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                cache=cache,
                stopping_criteria=StoppingCriteriaList([_SentenceEnd(stop)]),
                **kwargs,
            )
    return out[:, ids.shape[1] :]
