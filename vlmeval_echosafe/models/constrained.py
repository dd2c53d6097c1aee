"""Grammar-constrained greedy decoding on the plugin's backend (xgrammar).

A reply that must follow a fixed form (EchoSafe's reflection: four labelled lines, the decision one of two words)
is decoded with its logits masked to what the grammar allows, so the form always parses; the model still chooses
every token of every value, including the decision, which is therefore the model's own greedy choice and not a
comparison of summed log-probabilities (that would favour whichever option has fewer tokens). A per-line token
cap ends a line by allowing only newline-bearing tokens once the line has used its budget, so the whole form fits
a known token budget.

The form's literal parts (its labels, a newline the grammar requires) are not the model's to choose: where the
grammar forces a literal, it is written in xgrammar's jump-forward tokens, taken when the literal starts (the
longest vocabulary pieces that spell it; the last piece is left to the model when a longer token could extend it,
e.g. the space after ``Scenario:`` that may merge with the value's first word). A random-weight model otherwise
spells a label one or two bytes per token, in whatever pieces its noise prefers. Wherever the masks leave exactly
one token, greedy decoding writes that token whatever the logits say, so it needs no forward pass of its own:
`decode.decode_form` feeds such tokens to the model together, several per forward pass; `FormProcessor` gives the
same tokens one per step inside transformers' `generate`.
"""

from __future__ import annotations

from collections.abc import Callable
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
        self.vocab_size = vocab_size
        # Tokens that end a line (hold a newline), for the line cap; computed once per tokenizer.
        newline = torch.zeros(vocab_size, dtype=torch.bool)
        for i, piece in enumerate(self._info.decoded_vocab):
            if b"\n" in piece:
                newline[i] = True
        self.newline = newline

    def rows(self, constraint: Constraint, rows: int) -> FormRows:
        """Fresh grammar state for ``rows`` replies decoded together."""
        if constraint.grammar not in self._compiled:
            self._compiled[constraint.grammar] = self._compiler.compile_grammar(constraint.grammar)
        return FormRows(self._compiled[constraint.grammar], rows, constraint.line_tokens, self)


class FormRows:
    """Each row's place in its form: the grammar matcher and the tokens written on the current line."""

    def __init__(self, compiled: Any, rows: int, line_cap: int | None, grammars: Grammars) -> None:
        import torch
        import xgrammar as xgr

        self._matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self._line = [0] * rows
        self._jump: list[list[int]] = [[] for _ in range(rows)]  # the rest of the literal being written
        self._cap = line_cap
        self._newline = grammars.newline
        self._vocab = grammars.vocab_size
        self._bitmask = xgr.allocate_token_bitmask(1, grammars.vocab_size)
        self._bits = torch.tensor([1 << b for b in range(32)], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self._matchers)

    def done(self, row: int) -> bool:
        """Whether the row's form is finished (its end-of-turn token accepted)."""
        return self._matchers[row].is_terminated()

    def accept(self, row: int, token: int) -> None:
        if not self._matchers[row].accept_token(token):
            raise RuntimeError(f"vlmeval-echosafe: form row {row}: token {token} breaks the grammar")
        self._line[row] = 0 if bool(self._newline[token]) else self._line[row] + 1
        jump = self._jump[row]
        if jump:
            if jump[0] != token:
                raise RuntimeError(f"vlmeval-echosafe: form row {row}: token {token} where the literal has {jump[0]}")
            jump.pop(0)

    def literal(self, row: int) -> int | None:
        """The row's next token when the grammar forces a literal (its next jump-forward token), else None."""
        if not self._jump[row] and self._matchers[row].find_jump_forward_string():
            self._jump[row] = self._matchers[row].find_jump_forward_tokens()  # the literal's pieces, taken once
        return self._jump[row][0] if self._jump[row] else None

    def allowed(self, row: int) -> Any:
        """The tokens the row may write next, as a (vocab,) bool tensor: the `literal` token where there is one,
        otherwise the grammar's mask, narrowed to newline-bearing tokens once the line is at its cap (where the
        grammar allows any; otherwise the grammar's mask stands, so the cap can never make a row unparseable)."""
        import torch

        token = self.literal(row)
        if token is not None:
            only = torch.zeros(self._vocab, dtype=torch.bool)
            only[token] = True
            return only
        matcher = self._matchers[row]
        matcher.fill_next_token_bitmask(self._bitmask, 0)
        words = self._bitmask[0].to(torch.int64) & 0xFFFFFFFF
        allowed = ((words[:, None] & self._bits) != 0).flatten()[: self._vocab]
        if self._cap and self._line[row] >= self._cap:
            narrowed = allowed & self._newline
            if bool(narrowed.any()):
                return narrowed
        return allowed


class FormProcessor(LogitsProcessor):
    """`FormRows` inside transformers' `generate`, one token per step: batch row ``batch_rows[i]`` follows form
    row ``i``; other batch rows are left alone. ``ended(b)``: whether batch row ``b`` has stopped (by its own token
    cap, or before this call began); its later tokens are padding. The forms must already hold every token the
    batch's rows end with when the call starts."""

    def __init__(self, forms: FormRows, batch_rows: list[int], ended: Callable[[int], bool] | None = None) -> None:
        if len(batch_rows) != len(forms):
            raise ValueError(f"vlmeval-echosafe: {len(batch_rows)} batch rows for {len(forms)} form rows")
        self.forms, self.batch_rows = forms, batch_rows
        self._ended = ended or (lambda b: False)
        self._masked: list[int] = []  # form rows whose last token this processor chose the mask for

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        for i in self._masked:  # account for the token each row just wrote
            self.forms.accept(i, int(input_ids[self.batch_rows[i], -1]))
        self._masked = [i for i, b in enumerate(self.batch_rows) if not self.forms.done(i) and not self._ended(b)]
        for i in self._masked:
            b = self.batch_rows[i]
            allowed = self.forms.allowed(i).to(scores.device)[: scores.shape[-1]]
            scores[b] = scores[b].masked_fill(~allowed, -float("inf"))
        return scores
