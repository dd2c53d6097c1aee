"""A tiny OpenAI-compatible chat server on 127.0.0.1 for fault injection; replies come from a function. It answers
chat completions (a ``messages`` body) and raw completions (a ``prompt`` body, as WildGuard is asked).

``reply(prompt)`` gets the last user turn's text; with ``full=True`` it gets the whole request body instead. Every
body is kept in ``requests`` and the most requests in flight at once in ``max_in_flight``. A request with
``stream: true`` gets the reply as server-sent events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Fault:
    """What the server sends instead of a chat completion."""

    status: int = 200
    body: str = "{}"
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


class StubServer:
    def __init__(self, reply: Callable[..., str | Fault], full: bool = False) -> None:
        self.reply, self.full = reply, full
        self.prompts: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                with stub._lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    self._answer()
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _answer(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"] if "messages" in body else body["prompt"]  # chat | completion
                prompt = content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
                with stub._lock:
                    stub.prompts.append(prompt)
                    stub.requests.append(body)
                text = stub.reply(body if stub.full else prompt)
                if isinstance(text, Fault):
                    self._fault(text)
                    return
                if body.get("stream"):
                    self._stream(text, body.get("model"))
                    return
                choice = {"index": 0, "finish_reason": "stop"}
                chat = "messages" in body
                choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
                payload = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion" if chat else "text_completion",
                        "model": body.get("model"),
                        "choices": [choice],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, text: str, model: str | None) -> None:
                """``stream: true``: the reply as server-sent events, one word per chunk, then ``[DONE]``."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = text.split(" ")
                for i, word in enumerate(words):
                    piece = word if i == len(words) - 1 else word + " "
                    chunk = {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

            def _fault(self, fault: Fault) -> None:
                """An HTTP error status, a body that is not JSON, or an answer that comes too late."""
                if fault.delay:
                    time.sleep(fault.delay)
                body = fault.body.encode()
                try:
                    self.send_response(fault.status)
                    for name, value in fault.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout) and closed the connection
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
