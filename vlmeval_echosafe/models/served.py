"""An inner model behind an OpenAI-compatible chat endpoint (vLLM, SGLang, LMDeploy, `transformers serve`).

The plugin runs no server and no scheduler: the endpoint batches, shards (tensor parallelism) and caches prefixes.
`ServedVLM` speaks the core's ``served-chat`` protocol: every defense (``Base_<name>`` included) talks to it
through that adapter (`core/inner.py`), which sends a micro-batch's requests
concurrently. Requests are built in one place (`turn`) so that a conversation's first turn
is sent byte for byte the same in the answer call and in the reflection call that repeats it: images are the
files' own bytes as base64 data URLs (never re-encoded), which is what lets vLLM's and SGLang's prefix caches
reuse the first turn.

Transport errors are the `openai` client's job: it retries 408/409/429/5xx, timeouts and dropped connections
with exponential backoff (``retry`` times). A call that still fails returns the host's failure string, which the
judges count as unknown and EchoSafe never reflects on.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FAIL_MSG = "Failed to obtain answer via API."  # the host's (vlmeval.inference.FAIL_MSG): --reuse re-asks such rows
KEY_ENV = ("LMDEPLOY_API_KEY", "OPENAI_API_KEY")  # the host's variable for --base-url models, then OpenAI's
NO_KEY = "EMPTY"  # what vLLM and SGLang accept when they run without --api-key

# The probe for `response_format`: a request a server that enforces a JSON schema can only answer with this
# object, and one that ignores the field answers in words.
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {
        "greeting": {"type": "string", "maxLength": 16},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
        "tone": {"type": "string", "enum": ["warm", "plain"]},
    },
    "required": ["greeting", "tone"],
    "additionalProperties": False,
}
_PROBE_PROMPT = "Say hello in one short sentence."


def api_key(key: str | None) -> str:
    """``key`` if given, else the first of `KEY_ENV` that is set, else `NO_KEY`."""
    if key:
        return key
    return next((os.environ[v] for v in KEY_ENV if os.environ.get(v)), NO_KEY)


def response_format(schema: dict[str, Any], name: str = "reply") -> dict[str, Any]:
    """The OpenAI ``response_format`` that asks for a JSON object matching ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class ServedVLM:
    """The model an OpenAI-compatible endpoint serves under ``model``.

    ``--base-url URL --model [<Defense>_|Base_]NAME`` registers one (the launcher), or a `wrappers/models.yaml`
    entry ``{class: ServedVLM, base_url: URL, model: NAME}``. The key comes from ``key`` (``--key``), else
    ``LMDEPLOY_API_KEY`` or ``OPENAI_API_KEY``; it is never logged."""

    inner_protocol = "served-chat"

    def __init__(
        self,
        model: str,
        base_url: str,
        key: str | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        top_p: float | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float = 600,
        retry: int = 5,
        use_vllm: bool = False,  # the host passes it to names that contain Qwen2-VL; an endpoint has no use for it
    ) -> None:
        from openai import OpenAI

        self.model, self.base_url = model, base_url.rstrip("/")
        self.sampling = {"max_tokens": max_tokens, "temperature": temperature}
        if top_p is not None:
            self.sampling["top_p"] = top_p
        self.extra_body = dict(extra_body or {})
        self.client = OpenAI(base_url=self.base_url, api_key=api_key(key), timeout=timeout, max_retries=retry)
        self._schema_support: str | None = None

    def __repr__(self) -> str:  # no key in any repr
        return f"ServedVLM(model={self.model!r}, base_url={self.base_url!r})"

    # ---- requests ----------------------------------------------------------------------------------------
    @staticmethod
    def turn(message: list[dict[str, str]]) -> list[dict[str, Any]]:
        """One user turn in OpenAI's content form: text parts and images as data URLs of the files' bytes."""
        parts: list[dict[str, Any]] = []
        for item in message:
            if item["type"] == "text":
                parts.append({"type": "text", "text": item["value"]})
            elif item["type"] == "image":
                path = Path(item["value"])
                mime = mimetypes.guess_type(path.name)[0] or "image/png"
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
            else:
                raise ValueError(f"ServedVLM: cannot send a {item['type']!r} input")
        return parts

    def complete(
        self, messages: list[dict[str, Any]], max_tokens: int | None = None, schema: dict[str, Any] | None = None
    ) -> str:
        """One chat completion (the client retries transport errors); raises when it fails or is empty."""
        kwargs: dict[str, Any] = {**self.sampling}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if schema is not None:
            kwargs["response_format"] = response_format(schema)
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        reply = self.client.chat.completions.create(model=self.model, messages=messages, **kwargs)
        text = reply.choices[0].message.content if reply.choices else None
        if not text:
            raise ValueError(f"{self.model} at {self.base_url} returned an empty reply")
        return text

    def failure(self, err: Exception) -> str:
        """The prediction of a call that failed: the host's failure string and why."""
        return f"{FAIL_MSG} ({type(err).__name__}: {err})"

    # ---- structured output -------------------------------------------------------------------------------
    def schema_support(self) -> str:
        """``json-schema`` if the endpoint enforces ``response_format`` JSON schemas, else ``free`` (it refuses
        the field with a 4xx, or accepts and ignores it, as `transformers serve` does). Asked once per model."""
        if self._schema_support is None:
            self._schema_support = self._probe_schema()
        return self._schema_support

    def _probe_schema(self) -> str:
        from openai import APIError, BadRequestError, UnprocessableEntityError

        messages = [{"role": "user", "content": _PROBE_PROMPT}]
        try:
            text = self.complete(messages, max_tokens=64, schema=_PROBE_SCHEMA)
        except (BadRequestError, UnprocessableEntityError) as err:
            log.warning(
                "%s at %s refuses response_format (HTTP %s): reflections are free text, parsed strictly",
                self.model,
                self.base_url,
                err.status_code,
            )
            return "free"
        except ValueError:  # an empty reply: not the requested object
            text = ""
        except APIError as err:
            raise RuntimeError(
                f"{self.model} at {self.base_url} did not answer ({type(err).__name__}: {err}); is the endpoint up "
                f"and serving {self.model!r}?"
            ) from err
        if _follows_probe_schema(text):
            return "json-schema"
        log.warning(
            "%s at %s accepts response_format but does not enforce it (its reply is not the requested JSON): "
            "reflections are free text, parsed strictly",
            self.model,
            self.base_url,
        )
        return "free"


def _follows_probe_schema(text: str) -> bool:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return False
    return (
        isinstance(obj, dict)
        and set(obj) <= set(_PROBE_SCHEMA["properties"])
        and isinstance(obj.get("greeting"), str)
        and obj.get("tone") in ("warm", "plain")
    )
