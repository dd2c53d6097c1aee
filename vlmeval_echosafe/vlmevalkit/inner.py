"""A VLMEvalKit model as an inner model of a defense (the core's ``chat`` or ``one-message`` protocol).

The host's ``BaseModel.chat`` drops the oldest turns when a call fails; a follow-up that no longer sees the request
is not the same algorithm, so :meth:`HostInner.chat` calls the model's turn-level entry point directly (an API
model with its own retry budget, never dropping turns) and a failed call raises.
"""

from __future__ import annotations

import random
import time
from typing import Any

from ..core.inner import Content


def host_protocol(cls: type) -> str:
    """The protocol a host model class speaks: ``chat`` when it has multi-turn chat, else ``one-message``."""
    return "chat" if hasattr(cls, "chat_inner") else "one-message"


class HostInner:
    """Wraps a built VLMEvalKit model: ``ask`` through the model's own checks, ``chat`` without turn dropping."""

    def __init__(self, model: Any) -> None:
        self.host_model = model
        self.inner_protocol = host_protocol(type(model))

    def ask(self, message: Content, dataset: str | None) -> str:
        return self.host_model.generate(message=[dict(m) for m in message], dataset=dataset)

    def chat(self, turns: list[dict[str, Any]], dataset: str | None) -> str:
        model = self.host_model
        for t in turns:  # the checks `BaseModel.chat` applies, without its turn-dropping retry
            if model.check_content(t["content"]) not in ("str", "dict", "liststr", "listdict"):
                raise ValueError(f"invalid chat content {t['content']!r}")
            t["content"] = model.preproc_content(t["content"])
        if _is_api(model):
            return _api_call(model, turns)
        return model.chat_inner(turns, dataset=dataset)


def _is_api(model: Any) -> bool:
    from vlmeval.api.base import BaseAPI

    return isinstance(model, BaseAPI)


def _api_call(model: Any, turns: list[dict]) -> str:
    """One multi-turn call of a host API model with its own retry budget (``retry``, ``wait``), never dropping
    turns: the host's `chat_inner` for API models retries with the oldest turns removed."""
    fail = getattr(model, "fail_msg", "Failed to obtain answer via API.")
    last = None
    for attempt in range(max(1, int(getattr(model, "retry", 1)))):
        try:
            code, answer, _ = model.generate_inner(turns, **dict(getattr(model, "default_kwargs", {})))
            if code == 0 and answer and fail not in answer:
                return answer
            last = f"ret_code {code}"
        except Exception as err:  # the host's API wrappers raise on transport errors
            last = f"{type(err).__name__}: {err}"
        if attempt + 1 < int(getattr(model, "retry", 1)):
            time.sleep(random.random() * float(getattr(model, "wait", 1)) * 2)
    raise RuntimeError(f"API call failed after {getattr(model, 'retry', 1)} tries ({last})")
