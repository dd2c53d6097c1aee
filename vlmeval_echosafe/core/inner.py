"""The inner model as a method sees it: one small protocol, one adapter per kind of model.

A model declares which protocol it speaks (``inner_protocol``); the adapter is chosen by that declaration,
not by the model's class, so a harness adapter can wrap its own models (VLMEvalKit's: ``vlmevalkit/inner.py``).

A method that talks to its model twice per item (EchoSafe answers, then reflects on its answer) needs two things:
answer a batch of requests, and continue each answered conversation with one more user turn. The follow-up must
see the answer turn exactly as the model saw it (images, retrieved insights, instruction, question) and the
model's answer, on every kind of model, so that a method is one algorithm whatever runs it. The adapters differ
only in how they deliver that same context:

- ``kv-session``: the plugin's transformers backend keeps each row's token ids and KV cache and appends the new
  turn's tokens (no second prefill); a reply with a fixed form is decoded under its grammar (``constrained``).
- ``chat``: a model with multi-turn chat gets the three turns (request, its answer, the follow-up) as messages;
  a failed call is a failed follow-up (never a retry with fewer turns).
- ``one-message``: a model without chat gets one message holding the images, the request, its answer and the
  follow-up, in the same words.
- ``served-chat``: a model behind an OpenAI-compatible endpoint gets the three turns as chat messages, the first
  turn byte for byte as the answer call sent it (so a server's prefix cache can reuse it); a micro-batch's calls
  are sent concurrently. The reply's form is asked for as a JSON schema where the endpoint enforces one
  (``json-schema``), and parsed strictly otherwise (``free``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..models.constrained import Constraint

log = logging.getLogger(__name__)

Content = list[dict[str, str]]  # VLMEvalKit message items: {'type': 'image'|'text', 'value': ...}


@dataclass
class Answered:
    """A batch of answered requests: each row's answer turn as sent, its answer, and what a follow-up continues."""

    turns: list[Content]
    answers: list[str]
    state: Any = None  # the backend's handle on the open conversations (a KV session), if it keeps one


@dataclass(frozen=True)
class Reply:
    """One row's follow-up: the text, or why there is none."""

    text: str | None
    error: str | None = None


class Inner(ABC):
    """The protocol. ``path`` and ``decoding`` say how the follow-up saw the conversation and how its form was
    produced; both are recorded in the method's config and trace."""

    path: str
    # "constrained": the form is enforced while decoding (a grammar); "json-schema": the endpoint enforces it as a
    # JSON schema; "free": generated, then parsed. None: decided when the adapter is built (by the endpoint).
    decoding: str | None = "free"
    batched: bool = False  # whether `answer` handles several rows at once (one batch, or concurrent calls)

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def planned(cls) -> dict[str, str | None]:
        """What `describe` will say, known before the model is built (None where the model decides)."""
        return {"path": cls.path, "decoding": cls.decoding}

    def describe(self) -> dict[str, str]:
        return {"path": self.path, "decoding": str(self.decoding)}

    @abstractmethod
    def answer(self, turns: list[Content], dataset: str | None, keep: bool) -> Answered:
        """Answer each turn; with ``keep``, hold what a follow-up needs."""

    @abstractmethod
    def ask(self, message: Content, dataset: str | None) -> str:
        """One request, answered as the model answers a single call (the one-item defenses' entry point)."""

    @abstractmethod
    def follow_up(self, answered: Answered, text: str, dataset: str | None, form: Constraint) -> list[Reply]:
        """Continue every answered conversation with the user turn ``text``; ``form`` is the reply's grammar."""

    def answer_and_follow_up(
        self,
        turns: list[Content],
        dataset: str | None,
        earlier: Answered,
        earlier_dataset: str | None,
        text: str,
        form: Constraint,
    ) -> tuple[Answered, list[Reply]]:
        """`answer` ``turns`` (kept for a follow-up) and `follow_up` ``earlier`` with ``text``, as one step (a
        pipelined method overlaps one batch's follow-ups with the next batch's answers). Here the two run in
        turn; a backend that decodes both in one batch overrides it. Both give what the separate calls give."""
        replies = self.follow_up(earlier, text, earlier_dataset, form)
        return self.answer(turns, dataset, keep=True), replies


class SessionInner(Inner):
    """The plugin's transformers backend: batched decoding, KV-cache sessions, grammar-constrained forms."""

    path, decoding, batched = "kv-session", "constrained", True

    def ask(self, message: Content, dataset: str | None) -> str:
        return self.model.generate_turns([{"role": "user", "content": message}])

    def answer(self, turns: list[Content], dataset: str | None, keep: bool) -> Answered:
        conversations = [[{"role": "user", "content": t}] for t in turns]
        if keep:
            answers, session = self.model.start_batch(conversations)
            return Answered(turns, answers, session)
        return Answered(turns, self.model.generate_batch_turns(conversations))

    def follow_up(self, answered: Answered, text: str, dataset: str | None, form: Constraint) -> list[Reply]:
        session = answered.state
        texts = [self.model.next_turn_text(session, text, row) for row in range(len(session))]
        replies = self.model.extend_batch(session, texts, max_new_tokens=None, stop=None, constraint=form)
        return [Reply(r) for r in replies]

    def answer_and_follow_up(
        self,
        turns: list[Content],
        dataset: str | None,
        earlier: Answered,
        earlier_dataset: str | None,
        text: str,
        form: Constraint,
    ) -> tuple[Answered, list[Reply]]:
        """One decoding batch: the new turns' answers and ``earlier``'s follow-ups share every forward pass."""
        old = earlier.state
        texts = [self.model.next_turn_text(old, text, row) for row in range(len(old))]
        conversations = [[{"role": "user", "content": t}] for t in turns]
        answers, session, replies = self.model.start_and_extend(conversations, old, texts, form)
        return Answered(turns, answers, session), [Reply(r) for r in replies]


class _TurnInner(Inner):
    """A model that answers one request per call (``ask``): the chat and one-message adapters."""

    def answer(self, turns: list[Content], dataset: str | None, keep: bool) -> Answered:
        return Answered(turns, [self.model.ask([dict(m) for m in t], dataset) for t in turns])

    def ask(self, message: Content, dataset: str | None) -> str:
        return self.model.ask([dict(m) for m in message], dataset)

    def follow_up(self, answered: Answered, text: str, dataset: str | None, form: Constraint) -> list[Reply]:
        out = []
        for turn, answer in zip(answered.turns, answered.answers, strict=True):
            try:
                out.append(Reply(self._one(turn, answer, text, dataset)))
            except Exception as err:  # one failed follow-up must not take the batch's answers with it
                out.append(Reply(None, f"follow-up call failed: {type(err).__name__}: {err}"))
        return out

    @abstractmethod
    def _one(self, turn: Content, answer: str, text: str, dataset: str | None) -> str: ...


class ChatInner(_TurnInner):
    """A model with multi-turn chat (``chat``): request, answer and follow-up as three turns. The model's
    ``chat`` must not drop turns when a call fails (a follow-up that no longer sees the request is another
    algorithm); the VLMEvalKit adapter's wrapper calls the host model's turn-level entry point for that."""

    path = "chat"

    def _one(self, turn: Content, answer: str, text: str, dataset: str | None) -> str:
        turns = [
            {"role": "user", "content": [dict(m) for m in turn]},
            {"role": "assistant", "content": [{"type": "text", "value": answer}]},
            {"role": "user", "content": [{"type": "text", "value": text}]},
        ]
        return self.model.chat(turns, dataset)


# The one-message follow-up: the request, the model's reply and the follow-up turn, in one user message.
ONE_MESSAGE = "The request you were given:\n{turn}\n\nYour reply:\n{answer}\n\n{reflect}"


class MessageInner(_TurnInner):
    """A model without chat: the whole exchange in one message."""

    path = "one-message"

    def _one(self, turn: Content, answer: str, text: str, dataset: str | None) -> str:
        images = [dict(m) for m in turn if m["type"] == "image"]
        request = "\n".join(m["value"] for m in turn if m["type"] == "text")
        message = [*images, {"type": "text", "value": ONE_MESSAGE.format(turn=request, answer=answer, reflect=text)}]
        return self.model.ask(message, dataset)


T = TypeVar("T")
R = TypeVar("R")


def _concurrently(call: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``call`` on every item at once (one thread each: the calls wait on the network), results in order."""
    items = list(items)
    if len(items) <= 1:
        return [call(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(call, items))


# A JSON reply spends tokens on keys, quotes and brackets that the line form does not: the form's token budget
# plus this much covers the four keys and up to six quoted signals.
JSON_FORM_TOKENS = 48


class ServedInner(Inner):
    """A model behind an OpenAI-compatible endpoint (`models/served.py`): the B answers of a micro-batch are sent
    concurrently, then the B reflections, each a second turn after the first turn exactly as it was sent and the
    answer. The endpoint batches them (continuous batching) and, where it caches prefixes, reuses the first turn."""

    path, batched = "served-chat", True
    decoding = None  # the endpoint's: json-schema where it enforces response_format, else free

    def describe(self) -> dict[str, str]:
        """Asks the endpoint (once) whether it enforces JSON schemas: only a method that follows up needs to know."""
        return {"path": self.path, "decoding": self.model.schema_support()}

    def answer(self, turns: list[Content], dataset: str | None, keep: bool) -> Answered:
        firsts = [self.model.turn(t) for t in turns]
        answers = _concurrently(self._answer_one, firsts)
        state = [(first, ok) for first, (_, ok) in zip(firsts, answers, strict=True)]
        return Answered(turns, [text for text, _ in answers], state)

    def ask(self, message: Content, dataset: str | None) -> str:
        """One call; a failure (after the client's retries) is the host's failure string, never an exception."""
        return self._answer_one(self.model.turn(message))[0]

    def _answer_one(self, first: list[dict[str, Any]]) -> tuple[str, bool]:
        try:
            return self.model.complete([{"role": "user", "content": first}]), True
        except Exception as err:  # after the client's retries: an unknown answer, never a stored insight
            log.warning("%s: answer failed: %s", self.model.model, self.model.failure(err))
            return self.model.failure(err), False

    def follow_up(self, answered: Answered, text: str, dataset: str | None, form: Constraint) -> list[Reply]:
        schema = form.json_schema if self.model.schema_support() == "json-schema" else None
        budget = form.max_new_tokens
        if schema is not None and budget is not None:
            budget += JSON_FORM_TOKENS

        def one(row: tuple[tuple[list[dict[str, Any]], bool], str]) -> Reply:
            (first, ok), answer = row
            if not ok:
                return Reply(None, "answer failed: nothing to follow up")
            messages = [
                {"role": "user", "content": first},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": text},
            ]
            try:
                return Reply(self.model.complete(messages, max_tokens=budget, schema=schema))
            except Exception as err:
                return Reply(None, f"follow-up call failed: {type(err).__name__}: {err}")

        return _concurrently(one, zip(answered.state, answered.answers, strict=True))


ADAPTERS: dict[str, type[Inner]] = {
    "kv-session": SessionInner,
    "served-chat": ServedInner,
    "chat": ChatInner,
    "one-message": MessageInner,
}


def adapt(model: Any) -> Inner:
    """The adapter for a built inner model, chosen by the protocol it declares (``inner_protocol``)."""
    return adapter_class(protocol_of(model))(model)


def protocol_of(model: Any) -> str:
    """The protocol a model (or model class) declares; a clear error for one that declares none."""
    protocol = getattr(model, "inner_protocol", None)
    if protocol not in ADAPTERS:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        raise TypeError(
            f"{name} declares no inner-model protocol (inner_protocol = one of {sorted(ADAPTERS)}); a model the "
            "plugin does not run itself is wrapped by its harness adapter (VLMEvalKit models: "
            "vlmeval_echosafe.vlmevalkit.inner)"
        )
    return protocol


def adapter_class(protocol: str) -> type[Inner]:
    """The adapter of a protocol name (also used before the model is built, e.g. to check a resume)."""
    return ADAPTERS[protocol]
