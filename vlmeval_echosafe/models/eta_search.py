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

Deviations (RECONSTRUCTION): the N candidates of a sentence are decoded as one batch, re-prefilling the prompt and
the kept text (the code keeps the chosen candidate's KV cache); the sentence end is any token whose text ends in
"." (the code checks LLaMA's "." token id); sampling is seeded per sentence (``seed``) so runs repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SearchResult:
    text: str
    sentences: list[dict[str, Any]] = field(default_factory=list)  # per sentence: candidates' scores, the pick
    forward_passes: int = 0  # per sampled row (a pass over N candidates counts N)
    new_tokens: int = 0
    prompt_tokens: int = 0


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
    from transformers import StoppingCriteriaList

    text, images, _ = vlm._render(turns)
    text += " " if text.endswith(":") else ""  # "ASSISTANT:" templates put a space before the answer
    eos = set(vlm.eos_token_ids)
    stop = torch.tensor(sorted(stop_ids), device=vlm.model.device)
    n, kept, spent, index = settings.best_of_n, prefix, 0, 1
    budget = settings.max_new_tokens or vlm.max_new_tokens
    result = SearchResult("")
    tok = vlm.processor.tokenizer
    while spent < budget:
        inputs = vlm.processor(
            text=[text + kept] * n, images=(images * n) or None, padding=True, padding_side="left", return_tensors="pt"
        ).to(vlm.model.device)
        kwargs = {
            **vlm.generation_kwargs(min(settings.sentence_tokens, budget - spent), answer=False),
            "do_sample": True,
            "top_k": settings.top_k,
            "temperature": settings.temperature,
        }
        with torch.random.fork_rng(devices=[vlm.model.device] if vlm.model.device.type == "cuda" else []):
            torch.manual_seed(settings.seed * 100003 + index)
            with torch.inference_mode():
                out = vlm.model.generate(
                    **inputs, stopping_criteria=StoppingCriteriaList([_SentenceEnd(stop)]), **kwargs
                )
        new = out[:, inputs["input_ids"].shape[1] :]
        result.forward_passes += n * new.shape[1]
        result.prompt_tokens += int(inputs["attention_mask"].sum())
        candidates = []
        for row in range(n):
            ids = new[row].tolist()
            length = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), len(ids))
            body = [t for t in ids[:length] if t not in eos]
            candidates.append(
                {
                    "text": tok.decode(body, skip_special_tokens=True),
                    "tokens": length,
                    "ended": any(t in eos for t in ids[:length]),
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
    result.text = kept.strip()
    return result
