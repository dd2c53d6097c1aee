"""Greedy decoding under CoCA's calibrated logits, on the plugin's transformers backend.

Each request is decoded as two rows of one batch, the prompt without the safety principle and the prompt with it;
the answer so far is the same in both. At every step both rows' next-token logits come from one batched forward
pass, and both rows take the token that maximises

    calibrated = logits_without + amplification * (logits_with - logits_without)

so ``amplification`` 0 is the model's own greedy decoding and 1 is decoding with the principle in the prompt.
Tokens the backend suppresses (``-inf`` in both rows) stay suppressed. ``generate`` does the caching, positions
(Qwen's rope deltas included) and stopping; the pair ends together because it shares every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import LogitsProcessor


class CalibratedLogits(LogitsProcessor):
    """A logits processor over a batch whose first ``rows`` rows are the plain prompts and the next ``rows`` the
    same prompts with the principle: both halves get the calibrated scores."""

    def __init__(self, rows: int, amplification: float) -> None:
        self.rows, self.amplification = rows, amplification

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        without, with_ = scores[: self.rows], scores[self.rows :]
        both = torch.isfinite(without) & torch.isfinite(with_)
        delta = torch.where(both, with_ - without, torch.zeros_like(without))
        calibrated = without + self.amplification * delta
        return torch.cat([calibrated, calibrated], dim=0)


@dataclass
class Decoded:
    """One request's calibrated answer and what it cost."""

    text: str
    new_tokens: int
    steps: int  # forward passes of the pair's batch (each pass runs both rows)
    prompt_tokens: int  # both prompts


def calibrated_answers(
    vlm: Any, plain: list[list[dict]], principled: list[list[dict]], amplification: float
) -> list[Decoded]:
    """Greedy answers of ``vlm`` (a TransformersVLM) to ``plain`` conversations under CoCA's calibrated logits,
    ``principled`` being the same conversations with the principle."""
    import torch
    from transformers import LogitsProcessorList

    rows = len(plain)
    inputs = vlm.prepare_batch([*plain, *principled])
    with torch.inference_mode():
        out = vlm.model.generate(
            **inputs,
            logits_processor=LogitsProcessorList([CalibratedLogits(rows, amplification)]),
            **vlm.generation_kwargs(),
        )
    new = out[:rows, inputs["input_ids"].shape[1] :]
    eos = set(vlm.eos_token_ids)
    masks = inputs["attention_mask"]
    decoded = []
    for row in range(rows):
        tokens = new[row].tolist()
        length = next((n for n, t in enumerate(tokens) if t in eos), len(tokens))
        text = vlm.processor.tokenizer.decode(new[row, :length], skip_special_tokens=True).strip()
        steps = min(length + 1, new.shape[1])  # the pass that produced the end token counts too
        prompt = int(masks[row].sum() + masks[rows + row].sum())
        decoded.append(Decoded(text, length, steps, prompt))
    vlm.decoded.update(
        answer_tokens=sum(d.new_tokens for d in decoded), forwards=new.shape[1], answer_prompt_tokens=int(masks.sum())
    )
    return decoded
