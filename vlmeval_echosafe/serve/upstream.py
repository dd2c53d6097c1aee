"""The answer call to the upstream, async (one event loop serves every request while upstream calls wait).

The answer turn goes out as the served-chat adapter builds it (``ServedVLM.turn``: images as data URLs of the
files' bytes), so the reflection that repeats it later is byte for byte the same first turn. The ``openai`` client
retries what is safe to retry (connection errors, timeouts, 408/409/429/5xx, before any byte of an answer is
read); what still fails becomes an :class:`UpstreamError` with the status the guard answers with: 504 for a
timeout, 502 for an upstream that is down, refuses, or answers with something that is not a chat completion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
from openai import AsyncOpenAI

from ..models.served import api_key
from .metrics import GuardMetrics

# Sampling fields passed through as given; the rest of a request's fields are not forwarded.
SAMPLING = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
)
EXTRA_SAMPLING = ("top_k", "min_p", "repetition_penalty")  # not OpenAI's, but vLLM/SGLang take them


class UpstreamError(Exception):
    """An upstream call that failed for good: ``status`` (502/504) and ``kind`` go to the client and metrics."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def sampling_of(body: dict[str, Any]) -> dict[str, Any]:
    """The request's sampling fields, as keyword arguments of ``chat.completions.create``."""
    out = {k: body[k] for k in SAMPLING if body.get(k) is not None}
    extra = {k: body[k] for k in EXTRA_SAMPLING if body.get(k) is not None}
    return {**out, **({"extra_body": extra} if extra else {})}


class Upstream:
    def __init__(
        self, base_url: str, model: str, key: str | None, timeout: float, retries: int, metrics: GuardMetrics
    ) -> None:
        self.model, self.metrics = model, metrics
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key(key), timeout=timeout, max_retries=retries)

    def _error(self, err: Exception) -> UpstreamError:
        if isinstance(err, openai.APITimeoutError):
            out = UpstreamError(504, "timeout", f"the upstream model did not answer in time ({err})")
        elif isinstance(err, openai.APIConnectionError):
            out = UpstreamError(502, "connection", f"the upstream model is unreachable ({err})")
        elif isinstance(err, openai.APIStatusError):
            out = UpstreamError(
                502, f"status_{err.status_code}", f"the upstream answered HTTP {err.status_code}: {err}"
            )
        else:
            out = UpstreamError(
                502, "garbage", f"the upstream's reply is not a chat completion ({type(err).__name__}: {err})"
            )
        self.metrics.upstream_errors.labels(out.kind).inc()
        return out

    async def complete(
        self, messages: list[dict[str, Any]], sampling: dict[str, Any]
    ) -> tuple[str, dict | None, str | None]:
        """(the answer text, the upstream's usage if it gave one, its finish reason)."""
        try:
            reply = await self.client.chat.completions.create(model=self.model, messages=messages, **sampling)
            text = reply.choices[0].message.content if reply.choices else None
            finish = reply.choices[0].finish_reason if reply.choices else None
        except Exception as err:
            raise self._error(err) from err
        if not isinstance(text, str) or not text:
            self.metrics.upstream_errors.labels("empty").inc()
            raise UpstreamError(502, "empty", "the upstream returned a completion without answer text")
        usage = reply.usage.model_dump() if getattr(reply, "usage", None) else None
        return text, usage, finish

    async def stream(
        self, messages: list[dict[str, Any]], sampling: dict[str, Any], ending: dict[str, str | None]
    ) -> AsyncIterator[str]:
        """The answer's text pieces as the upstream streams them; its finish reason goes to ``ending``."""
        try:
            chunks = await self.client.chat.completions.create(
                model=self.model, messages=messages, stream=True, **sampling
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].finish_reason:
                    ending["finish_reason"] = chunk.choices[0].finish_reason
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except Exception as err:
            raise self._error(err) from err

    async def close(self) -> None:
        await self.client.close()
