"""Grammar-constrained decoding of the reflection form: the form always parses, and the decision is the model's
own greedy choice, whatever the number of pieces each option has in the tokenizer."""

from __future__ import annotations

import pytest
import torch

from vlmeval_echosafe.defenses.echosafe_prompts import form_budget, form_grammar
from vlmeval_echosafe.defenses.insight import parse_reflection
from vlmeval_echosafe.models.constrained import Constraint, FormProcessor, Grammars


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE whose merges make " safe" one piece and " unsafe" two (" un" + "safe"), and "Scen" one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("Ġ", "s"), ("Ġs", "a"), ("Ġsa", "f"), ("Ġsaf", "e"), ("Ġ", "u"), ("Ġu", "n")]
    merges += [("s", "a"), ("sa", "f"), ("saf", "e"), ("S", "c"), ("Sc", "e"), ("Sce", "n")]
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>")
    return fast


def _pieces(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False).input_ids)


def _greedy(tok, prefer: dict[str, float]) -> tuple[str, list, list[int]]:
    """Drive the processors the way `generate` does, one greedy step at a time, with fixed logits: ``prefer``
    (token -> logit) and -5 for every other token. Returns the text, the raw logits and the token ids."""
    form = Constraint(form_grammar(), line_tokens=6, max_new_tokens=form_budget(6))
    procs = [FormProcessor(Grammars(tok, len(tok), [tok.eos_token_id]).rows(form, 1), [0])]
    raw = torch.full((1, len(tok)), -5.0)
    for piece, logit in prefer.items():
        raw[0, tok.convert_tokens_to_ids(piece)] = logit
    ids = torch.zeros((1, 1), dtype=torch.long)
    for _ in range(form.max_new_tokens):
        scores = raw.clone()
        for proc in procs:
            scores = proc(ids, scores)
        nxt = int(scores.argmax(-1))
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        if nxt == tok.eos_token_id:
            break
    return tok.decode(ids[0, 1:], skip_special_tokens=True), raw, ids[0, 1:].tolist()


def test_decision_is_the_first_choice_not_a_length_penalised_sum(tokenizer):
    tok = tokenizer
    assert _pieces(tok, " safe") == ["Ġsafe"] and _pieces(tok, " unsafe") == ["Ġun", "safe"]
    # The model prefers " un" (the first piece of " unsafe") over " safe" by a hair.
    text, raw, _ = _greedy(tok, {"Ġun": 1.0, "Ġsafe": 0.9})
    assert parse_reflection(text)["decision"] == "unsafe"
    # A forced choice by summed log-probability would pick "safe": the second piece of " unsafe" costs
    # log-probability that the one-piece option never pays.
    logp = raw[0].log_softmax(-1)
    ids = {p: tok.convert_tokens_to_ids(p) for p in ("Ġun", "safe", "Ġsafe")}
    assert float(logp[ids["Ġun"]] + logp[ids["safe"]]) < float(logp[ids["Ġsafe"]])
    # and the mirror image: a hair towards " safe" gives safe
    text, _, _ = _greedy(tok, {"Ġun": 0.9, "Ġsafe": 1.0})
    assert parse_reflection(text)["decision"] == "safe"


def test_constrained_form_always_parses_with_hostile_logits(tokenizer):
    """Whatever the logits prefer (here: newlines and the end token), the grammar and the line cap give the four
    lines within the budget."""
    tok = tokenizer
    text, _, _ = _greedy(tok, {"Ċ": 3.0, "<|end|>": 4.0, "Ġsafe": 2.0})
    assert parse_reflection(text)["decision"] in ("safe", "unsafe")
    assert all(line.split(": ", 1)[1] for line in text.strip().splitlines())
    assert len(tok(text, add_special_tokens=False).input_ids) <= form_budget(6)


def test_labels_are_written_in_their_longest_pieces_whatever_the_logits_prefer(tokenizer):
    """The form's literal labels are xgrammar's jump-forward tokens: "Scen" in one piece even though the logits
    prefer spelling it letter by letter; the values stay the model's choice."""
    tok = tokenizer
    text, _, ids = _greedy(tok, {"S": 3.0, "c": 3.0, "e": 3.0, "Ġsafe": 2.0})
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "Scen" and text.startswith("Scenario: ")
    assert parse_reflection(text)["decision"] == "safe"
