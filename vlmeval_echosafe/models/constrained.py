"""Grammar-constrained greedy decoding on the plugin's backend (xgrammar logits processors).

A reply that must follow a fixed form (EchoSafe's reflection: four labelled lines, the decision one of two words)
is decoded in one `generate` call whose logits are masked to what the grammar allows, so the form always parses;
the model still chooses every token it writes, including the decision, which is therefore the model's own
greedy choice and not a comparison of summed log-probabilities (that would favour whichever option has fewer
tokens). A per-line token cap ends a line by allowing only newline-bearing tokens once the line has used its
budget, so the whole form fits a known token budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import LogitsProcessor


@dataclass(frozen=True)
class Constraint:
    """A grammar (xgrammar EBNF) the reply must match, a cap on the tokens of any one line, and the token budget
    of the whole reply (the caller knows its form, so it computes the budget that always fits it). ``json_schema``
    is the same form as a JSON object, for endpoints that enforce OpenAI's ``response_format`` instead."""

    grammar: str
    line_tokens: int | None = None
    max_new_tokens: int | None = None
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)


class Grammars:
    """xgrammar's view of one tokenizer, and the grammars compiled for it (compiled once, reused per call)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import torch
        import xgrammar as xgr

        self._info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self._compiler = xgr.GrammarCompiler(self._info)
        self._compiled: dict[str, Any] = {}
        # Tokens that end a line (hold a newline), for the line cap; computed once per tokenizer.
        newline = torch.zeros(vocab_size, dtype=torch.bool)
        for i, piece in enumerate(self._info.decoded_vocab):
            if b"\n" in piece:
                newline[i] = True
        self._newline = newline

    def processors(self, constraint: Constraint, rows: int) -> list[LogitsProcessor]:
        """Fresh processors for one `generate` call over ``rows`` rows (xgrammar's keep per-row state)."""
        import xgrammar as xgr

        if constraint.grammar not in self._compiled:
            self._compiled[constraint.grammar] = self._compiler.compile_grammar(constraint.grammar)
        out: list[LogitsProcessor] = [xgr.contrib.hf.LogitsProcessor(self._compiled[constraint.grammar])]
        if constraint.line_tokens:
            out.append(_LineCap(constraint.line_tokens, self._newline))
        return out


class _LineCap(LogitsProcessor):
    """After ``cap`` tokens on one line, only tokens holding a newline stay allowed (where the grammar allows
    any; otherwise the grammar's mask stands, so the cap can never make a row unparseable)."""

    def __init__(self, cap: int, newline: Any) -> None:
        self.cap, self.newline = cap, newline
        self.count: Any = None
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        newline = self.newline.to(scores.device)[: scores.shape[-1]]
        if self.count is None:
            self.count = torch.zeros(input_ids.shape[0], dtype=torch.long, device=scores.device)
        if self.started:  # account for the token each row just wrote
            wrote_newline = newline[input_ids[:, -1].clamp(max=newline.shape[0] - 1)]
            self.count = torch.where(wrote_newline, torch.zeros_like(self.count), self.count + 1)
        self.started = True
        capped = self.count >= self.cap
        if bool(capped.any()):
            allowed_nl = torch.isfinite(scores) & newline[None, :]
            narrow = capped & allowed_nl.any(dim=-1)
            scores = torch.where(narrow[:, None] & ~newline[None, :], torch.full_like(scores, -float("inf")), scores)
        return scores
