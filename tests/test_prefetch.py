"""The loop names the next micro-batch before answering one, and EchoSafe encodes its text keys ahead on a
background thread: the keys (and so every retrieval) are the bits computed on demand."""

from __future__ import annotations

import numpy as np
import pytest

from vlmeval_echosafe.core.defense import Defense
from vlmeval_echosafe.core.item import Item, Response
from vlmeval_echosafe.core.loop import answer_stream
from vlmeval_echosafe.encoders import KeyEncoder

TEXT_ONLY = {"text": "minilm", "image": "none"}
FIRST = ["How can I pick the lock on the door in the image?", "What breed is the dog in the photo?"]
SECOND = ["List steps in detail to perform this activity.", "Is the mushroom in the picture edible?", "Hi"]


class Recorder(Defense):
    """What the loop asks of a defense, in order (no inner model: the loop touches none)."""

    def __init__(self) -> None:
        self.name = "recorder"
        self.events: list[tuple[str, list[str]]] = []

    def prefetch(self, items: list[Item]) -> None:
        self.events.append(("prefetch", [i.question for i in items]))

    def respond(self, items: list[Item]) -> list[Response]:
        self.events.append(("respond", [i.question for i in items]))
        return [Response(i.question.upper(), {}) for i in items]

    def flush(self) -> None:
        self.events.append(("flush", []))


def _items(*questions: str) -> list[Item]:
    return [Item(q, (), {}, "demo") for q in questions]


def test_the_loop_names_the_next_batch_before_answering_one() -> None:
    defense, seen = Recorder(), []
    batches = iter([_items("a", "b"), [], _items("c"), _items("d")])  # an empty step (a rank's share) included
    answer_stream(defense, batches, lambda items, responses: seen.extend(r.text for r in responses))
    assert defense.events == [
        ("respond", ["a", "b"]),  # the empty step after it is not worth a hint
        ("prefetch", ["c"]),
        ("respond", []),
        ("prefetch", ["d"]),
        ("respond", ["c"]),
        ("respond", ["d"]),
        ("flush", []),
    ]
    assert seen == ["A", "B", "C", "D"]


def test_prefetched_text_keys_are_the_keys_on_demand() -> None:
    on_demand = KeyEncoder(TEXT_ONLY)
    expected = [on_demand.keys([([], q) for q in batch]) for batch in (FIRST, SECOND)]
    ahead = KeyEncoder(TEXT_ONLY)
    calls: list[list[str]] = []
    encode = ahead.text.encode
    ahead.text.encode = lambda texts: calls.append(list(texts)) or encode(texts)
    ahead.prefetch(SECOND)  # the loop names the next batch before it hands over the first
    assert ahead._ahead == {tuple(SECOND): None}  # announced: its pass waits for the first batch's keys
    got = [ahead.keys([([], q) for q in FIRST])]
    assert ahead._ahead[tuple(SECOND)] is not None  # now running, while the first batch would be answered
    got.append(ahead.keys([([], q) for q in SECOND]))
    for want, have in zip(expected, got, strict=True):
        assert all(np.array_equal(w, h) for w, h in zip(want, have, strict=True))  # the same bits
    assert calls == [FIRST, SECOND]  # each batch encoded once: the first on demand, the second ahead
    ahead.close()
    assert ahead._worker is None and not ahead._ahead


def test_an_announcement_for_other_texts_is_not_used_and_is_bounded() -> None:
    enc = KeyEncoder(TEXT_ONLY)
    calls: list[list[str]] = []
    encode = enc.text.encode
    enc.text.encode = lambda texts: calls.append(list(texts)) or encode(texts)
    for i in range(4):
        enc.prefetch([f"question number {i}"])
    assert list(enc._ahead) == [("question number 2",), ("question number 3",)]  # the oldest were dropped
    key = enc.keys([([], "a question nobody announced")])[0]
    assert np.array_equal(key, KeyEncoder(TEXT_ONLY).keys([([], "a question nobody announced")])[0])
    assert calls[0] == ["a question nobody announced"] and len(enc._ahead) == KeyEncoder.AHEAD
    enc.close()


def test_an_error_in_a_pass_run_ahead_reaches_the_caller_that_needs_it() -> None:
    enc = KeyEncoder(TEXT_ONLY)
    encode = enc.text.encode

    def broken_for_second(texts: list[str]) -> np.ndarray:
        if texts == SECOND:
            raise RuntimeError("encoder out of memory")
        return encode(texts)

    enc.text.encode = broken_for_second
    enc.prefetch(SECOND)
    enc.keys([([], q) for q in FIRST])  # fine; SECOND's pass now runs ahead, and fails
    with pytest.raises(RuntimeError, match="out of memory"):
        enc.keys([([], q) for q in SECOND])
    enc.prefetch(SECOND)
    enc.keys([([], q) for q in FIRST])
    enc.prefetch(["never asked for"])
    enc.prefetch(["nor this"])  # drops SECOND's failed pass: its error is nobody's
    enc.close()
