"""Greedy decoding of a grammar-constrained reply with jump-forward: forced tokens share one forward pass.

transformers' `generate` runs one forward pass per token. In a fixed form most tokens are not the model's to
choose: the labels, the newlines the grammar requires, the end of the form. Greedy decoding writes a token that
the masks leave alone whatever the logits say, so the logits of the position before it are never read; this loop
appends such tokens without a forward pass and feeds them to the model together with the next chosen token, one
forward pass per token the model actually chooses. The tokens are those of `generate` under `FormProcessor` with
the same processors (tests/test_sessions.py and tests/test_batching.py check it token by token).

Positions and inputs come from the model's own generation helpers, as in `generate`: positions are counted over
the attention mask (plus the Qwen families' rope deltas, restored on the model by the caller), so a chunk of
several tokens, left-padded to the widest row, lands exactly where the same tokens decoded one by one would.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from .constrained import FormRows


@dataclass
class FormDecode:
    """What a constrained continuation left: every row's new tokens, the grown ids, mask and cache, and how many
    forward passes it took."""

    tokens: list[list[int]]
    ids: Any
    mask: Any
    cache: Any
    forwards: int


def decode_form(
    model: Any,
    ids: Any,
    mask: Any,
    cache: Any,
    forms: FormRows,
    budget: int,
    processors: Any,
    banned: Any,
    pad_id: int,
    max_forwards: int | None = None,
) -> FormDecode:
    """Continue every row of ``ids`` (``mask``: 1 real, 0 padding; ``cache``: the KV cache of the ids seen so far)
    under ``forms``, greedily, at most ``budget`` new tokens per row; with ``max_forwards``, stop after that many
    forward passes (the tokens chosen last are then in ``ids`` but not yet in the cache).

    ``processors`` are the logits processors `generate` would apply (the checkpoint's generation config and the
    call's settings, e.g. suppressed tokens); ``banned`` (vocab,) marks the tokens they always suppress, so that a
    token the masks leave alone is known before the logits are."""
    import torch

    rows = ids.shape[0]
    new: list[list[int]] = [[] for _ in range(rows)]
    pending: list[list[int]] = [[] for _ in range(rows)]
    choice: list[Any] = [None] * rows  # the allowed set of the row's next chosen token; None once the row ended
    forwards = 0

    usable = ~banned  # what the processors never suppress

    def advance(row: int) -> None:
        """Append the row's forced tokens; leave its next free choice in ``choice`` or end the row."""
        while not forms.done(row) and len(new[row]) < budget:
            token = forms.literal(row)
            if token is None or bool(banned[token]):
                allowed = forms.allowed(row) & usable
                count = int(allowed.sum())
                if count == 0:
                    raise RuntimeError(f"vlmeval-echosafe: form row {row}: no token is allowed next")
                if count > 1:
                    choice[row] = allowed
                    return
                token = int(allowed.nonzero()[0, 0])
            forms.accept(row, token)
            new[row].append(token)
            pending[row].append(token)
        choice[row] = None

    for row in range(rows):
        advance(row)
    keep_one = "logits_to_keep" in inspect.signature(model.forward).parameters
    while True:
        ids, mask = _append(ids, mask, pending, pad_id)
        pending = [[] for _ in range(rows)]
        live = [row for row in range(rows) if choice[row] is not None]
        if not live or forwards == max_forwards:
            return FormDecode(new, ids, mask, cache, forwards)
        logits, cache = _forward(model, ids, mask, cache, keep_one)
        forwards += 1
        scores = processors(ids, logits)
        for row in live:
            masked = scores[row].masked_fill(~choice[row].to(scores.device)[: scores.shape[-1]], -float("inf"))
            token = int(torch.argmax(masked))
            forms.accept(row, token)
            new[row].append(token)
            pending[row].append(token)
            advance(row)


def _append(ids: Any, mask: Any, pending: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Each row's pending tokens as new columns, left-padded to the longest (padding is masked out)."""
    import torch

    width = max(len(p) for p in pending)
    if width == 0:
        return ids, mask
    seg = torch.full((len(pending), width), pad_id, dtype=ids.dtype)
    seg_mask = torch.zeros((len(pending), width), dtype=mask.dtype)
    for row, tokens in enumerate(pending):
        if tokens:
            seg[row, width - len(tokens) :] = torch.tensor(tokens, dtype=ids.dtype)
            seg_mask[row, width - len(tokens) :] = 1
    return torch.cat([ids, seg.to(ids.device)], dim=1), torch.cat([mask, seg_mask.to(mask.device)], dim=1)


def _forward(model: Any, ids: Any, mask: Any, cache: Any, keep_one: bool) -> tuple[Any, Any]:
    """One forward pass over the ids the cache has not seen; the last position's logits (float32) per row."""
    import torch

    width = ids.shape[1] - cache.get_seq_length()
    kwargs = {"cache": cache, "attention_mask": mask, "use_cache": True}
    positions = model._prepare_position_ids_for_generation(ids, kwargs)
    extra = {"logits_to_keep": 1} if keep_one else {}
    inputs = model.prepare_inputs_for_generation(
        ids, next_sequence_length=width, position_ids=positions, **kwargs, **extra
    )
    with torch.inference_mode():
        out = model(**inputs, return_dict=True)
    return out.logits[:, -1].to(dtype=torch.float32), out.cache
