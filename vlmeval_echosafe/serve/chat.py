"""An OpenAI chat request, checked and turned into what EchoSafe takes: one question and its images (as files).

EchoSafe keys, answers and reflects on one request: the guard takes conversations of one user turn (text parts
and images). Anything else is refused with a message (400), never half-used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Limits

MIME_SUFFIX = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}


class BadRequest(Exception):
    """A request the guard refuses: ``status`` (400, 404, 413) and the message the client gets."""

    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class ChatRequest:
    question: str
    images: list[bytes]  # decoded image files, in the order given
    mimes: list[str]
    stream: bool
    body: dict[str, Any]


def parse_body(raw: bytes, limits: Limits, model: str) -> dict[str, Any]:
    if len(raw) > limits.max_body_bytes:
        raise BadRequest(
            413, f"request body of {len(raw)} bytes is over the limit of {limits.max_body_bytes}", "too_large"
        )
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"the request body is not valid JSON ({err})") from err
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    if body.get("model") != model:
        raise BadRequest(
            404, f"the model {body.get('model')!r} does not exist; this guard serves {model!r}", "model_not_found"
        )
    return body


async def chat_request(body: dict[str, Any], limits: Limits, fetch: Any = None) -> ChatRequest:
    """The question and images of a one-user-turn request. ``fetch(url) -> (bytes, mime)`` fetches http(s) image
    URLs when they are allowed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        raise BadRequest(400, "messages must hold exactly one user message (the guard answers single-turn requests)")
    if messages[0].get("role") != "user":
        raise BadRequest(400, f"the message's role must be 'user', not {messages[0].get('role')!r}")
    if body.get("n", 1) != 1:
        raise BadRequest(400, "n must be 1 (one defended answer per request)")
    content = messages[0].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise BadRequest(400, "message content must be a string or a list of parts")
    texts, images, mimes = [], [], []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            data, mime = await _image(str(part["image_url"].get("url", "")), limits, fetch)
            images.append(data)
            mimes.append(mime)
        else:
            raise BadRequest(400, f"unsupported content part {json.dumps(part)[:80]}: use text and image_url parts")
    if len(images) > limits.max_images:
        raise BadRequest(413, f"{len(images)} images; at most {limits.max_images} per request", "too_large")
    question = "\n".join(texts).strip()
    if not question:
        raise BadRequest(400, "the user message has no text")
    return ChatRequest(question, images, mimes, bool(body.get("stream", False)), body)


async def _image(url: str, limits: Limits, fetch: Any) -> tuple[bytes, str]:
    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        mime = head[5:].split(";")[0].lower()
        if ";base64" not in head or mime not in MIME_SUFFIX:
            raise BadRequest(400, f"image data URLs must be base64 of one of {sorted(MIME_SUFFIX)}, got {head[:40]!r}")
        if len(payload) * 3 // 4 > limits.max_image_bytes:
            raise BadRequest(413, f"an image is over the limit of {limits.max_image_bytes} bytes", "too_large")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadRequest(400, f"an image's base64 is invalid ({err})") from err
    elif url.startswith(("http://", "https://")):
        if fetch is None:
            raise BadRequest(
                400, "image URLs are not fetched by this guard (start it with --allow-image-urls); send data URLs"
            )
        data, mime = await fetch(url)
        if len(data) > limits.max_image_bytes:
            raise BadRequest(
                413, f"the image at {url} is over the limit of {limits.max_image_bytes} bytes", "too_large"
            )
    else:
        raise BadRequest(400, f"image_url must be a data URL (or http(s) when allowed), got {url[:40]!r}")
    _check_image(data)
    return data, mime


def _check_image(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadRequest(400, f"an image could not be read ({err})") from err


def save_images(request: ChatRequest, folder: Path) -> list[str]:
    """The request's images as files under ``folder`` (named by content), for the encoders and the upstream turn."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for data, mime in zip(request.images, request.mimes, strict=True):
        path = folder / (hashlib.sha256(data).hexdigest()[:20] + MIME_SUFFIX.get(mime, ".png"))
        path.write_bytes(data)
        paths.append(str(path))
    return paths
