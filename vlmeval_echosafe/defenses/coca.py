"""CoCA, Constitutional Calibration (Gao et al., "CoCA: Regaining Safety-awareness of Multimodal Large Language
Models with Constitutional Calibration", COLM 2024; no official code).

At every decoding step the next-token logits are computed twice, for the prompt without and with a safety
principle, and the model decodes greedily from ``logits_without + amplification * (logits_with - logits_without)``
(:mod:`..models.calibrated`): the safety delta the principle causes, amplified. Both passes run as rows of one
batch, and a micro-batch of items is decoded together. Needs the logits, so it runs on the plugin's transformers
backend only.

RECONSTRUCTION: the principle's wording and the default amplification are this project's (the paper's exact
principle text and per-model values were not available to check); both are settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.item import Item
from .batched import BatchedBaseline
from .prompts import PLACEMENTS, place

# RECONSTRUCTION: a principle of the kind the paper describes (a safety requirement added to the input).
PRINCIPLE = (
    "The assistant must not give any content that is illegal, harmful, unethical or dangerous, including requests "
    "that an image shows or spells out; such requests are refused politely."
)


@dataclass(frozen=True)
class CoCASettings:
    principle: str = PRINCIPLE
    amplification: float = 2.0  # 0: the model's own greedy answer; 1: greedy with the principle in the prompt
    placement: str = "prompt+query"
    separator: str = "\n"

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS or self.placement == "auto":
            raise ValueError(f"placement={self.placement!r}; expected prompt+query, query+prompt or query+prompt+query")


class CoCA(BatchedBaseline):
    """Calibrated greedy decoding with and without a safety principle, on the plugin's transformers backend."""

    SETTINGS = CoCASettings
    NEEDS_LOGITS = True

    def answer_batch(self, items: list[Item]) -> tuple[list[str], list[dict[str, Any]]]:
        from ..models.calibrated import calibrated_answers

        s = self.settings
        plain = [[{"role": "user", "content": i.message()}] for i in items]
        texts = [place(s.principle, i.question, s.placement, s.separator) for i in items]
        principled = [
            [
                {
                    "role": "user",
                    "content": [*(m for m in i.message() if m["type"] == "image"), {"type": "text", "value": t}],
                }
            ]
            for i, t in zip(items, texts, strict=True)
        ]
        decoded = calibrated_answers(self.inner, plain, principled, s.amplification)
        records = [
            {
                "prompt": item.question,
                "principled_prompt": text,
                "amplification": s.amplification,
                "cost": {
                    "inner": {
                        "calls": 1,
                        "forward_passes": 2 * d.steps,
                        "prompt_tokens": d.prompt_tokens,
                        "new_tokens": d.new_tokens,
                        "shared": False,
                    }
                },
            }
            for item, text, d in zip(items, texts, decoded, strict=True)
        ]
        return [d.text for d in decoded], records
