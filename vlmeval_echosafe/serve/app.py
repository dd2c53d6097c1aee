"""The HTTP surface: OpenAI's chat completions and models, health, metrics, and the admin API and memory page.

The server is async; everything that touches a model or a bank runs in threads (the core is synchronous):
retrieval on the guard's retrieval thread, the answer as an async upstream call, the reflection in the
background queue. A streamed answer is the upstream's own stream, relayed chunk by chunk: retrieval is done
before the first byte, the reflection is queued after the last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .admin import admin_router, bearer
from .chat import BadRequest, chat_request, parse_body, save_images
from .guard import Guard, GuardRequest
from .upstream import Upstream, UpstreamError, sampling_of

log = logging.getLogger(__name__)

INSIGHTS_HEADER = "X-EchoSafe-Insights"  # ids of the insights retrieved for the request, comma-separated
REQUEST_HEADER = "X-EchoSafe-Request"  # the request's id (its provenance in the admin API)


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    """OpenAI's error form."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def create_app(guard: Guard) -> FastAPI:
    cfg, lim = guard.config, guard.config.limits
    upstream = Upstream(
        cfg.upstream, cfg.model, cfg.upstream_key, lim.upstream_timeout, lim.upstream_retries, guard.metrics
    )
    scratch = Path(tempfile.mkdtemp(prefix="guard-images-"))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.close()
        await asyncio.to_thread(guard.close)
        shutil.rmtree(scratch, ignore_errors=True)

    app = FastAPI(title="EchoSafe Guard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(admin_router(guard))
    fetch = _fetcher(lim.max_image_bytes) if lim.allow_image_urls else None

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return error(err.status, err.message, code=err.code)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"the guard failed: {type(err).__name__}: {err}", "server_error")

    def tenant_of(request: Request) -> str:
        tenant = cfg.keys.get(bearer(request) or "")
        if tenant is None:
            raise BadRequest(401, "a valid API key is required (Authorization: Bearer <key>)", "invalid_api_key")
        return tenant

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": cfg.model,
            "tenants": len(cfg.tenants),
            "reflection_queue": guard.reflector.depth(),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        guard.metrics.queue_depth.set(guard.reflector.depth())
        return Response(guard.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        tenant_of(request)
        return {
            "object": "list",
            "data": [{"id": cfg.model, "object": "model", "created": 0, "owned_by": "echosafe-guard"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        start = time.perf_counter()
        tenant = tenant_of(request)
        status = 500
        try:
            response = await _chat(request, tenant, start)
            status = response.status_code
            return response
        except BadRequest as err:
            status = err.status
            raise
        finally:
            guard.metrics.requests.labels(tenant, str(status)).inc()

    async def _chat(request: Request, tenant: str, start: float) -> Response:
        if int(request.headers.get("content-length") or 0) > lim.max_body_bytes:
            raise BadRequest(413, f"request body is over the limit of {lim.max_body_bytes} bytes", "too_large")
        body = parse_body(await request.body(), lim, cfg.model)
        req = await chat_request(body, lim, fetch)
        folder = scratch / uuid.uuid4().hex
        try:
            paths = save_images(req, folder)
            t = time.perf_counter()
            gr = await guard.prepare(tenant, req.question, paths)
            retrieval = time.perf_counter() - t
            guard.metrics.latency.labels("retrieval").observe(retrieval)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # the upstream turn holds the image bytes from here on
        headers = {
            INSIGHTS_HEADER: ",".join(map(str, gr.insight_ids)),
            REQUEST_HEADER: gr.id,
            "Server-Timing": f"retrieval;dur={retrieval * 1e3:.2f}",  # embed + search, waiting included
        }
        sampling = sampling_of(body)
        if req.stream:
            return await _stream(gr, sampling, headers, start)
        t = time.perf_counter()
        try:
            text, usage, finish = await upstream.complete(gr.messages, sampling)
        except UpstreamError as err:
            await asyncio.to_thread(guard.finish, gr, None, f"{err.kind}: {err.message}", False)
            return error(err.status, err.message, "upstream_error", err.kind)
        upstream_s = time.perf_counter() - t
        guard.metrics.latency.labels("upstream").observe(upstream_s)
        headers["Server-Timing"] += f", upstream;dur={upstream_s * 1e3:.2f}"
        await asyncio.to_thread(guard.finish, gr, text, None, False)
        guard.metrics.latency.labels("total").observe(time.perf_counter() - start)
        completion = {
            "id": f"chatcmpl-{gr.id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cfg.model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish or "stop"}
            ],
            "usage": usage,
        }
        return JSONResponse(completion, headers=headers)

    async def _stream(gr: GuardRequest, sampling: dict[str, Any], headers: dict[str, str], start: float) -> Response:
        """Relay the upstream's stream; a failure before the first piece is an error status, after it an error
        event in the stream (the status line went out already)."""
        t = time.perf_counter()
        ending: dict[str, str | None] = {"finish_reason": None}
        pieces = upstream.stream(gr.messages, sampling, ending)
        try:
            first = await anext(pieces, None)
            if first is None:
                raise UpstreamError(502, "empty", "the upstream streamed no answer text")
        except UpstreamError as err:
            await asyncio.to_thread(guard.finish, gr, None, f"{err.kind}: {err.message}", True)
            return error(err.status, err.message, "upstream_error", err.kind)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            body = {
                "id": f"chatcmpl-{gr.id}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": cfg.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(body)}\n\n"

        async def events() -> AsyncIterator[str]:
            text, failure = [first], "the client went away before the answer was complete"
            try:
                yield chunk({"role": "assistant", "content": first})
                try:
                    async for piece in pieces:
                        text.append(piece)
                        yield chunk({"content": piece})
                    failure = None
                except UpstreamError as err:
                    failure = f"{err.kind}: {err.message}"
                    event = {"error": {"message": err.message, "type": "upstream_error", "code": err.kind}}
                    yield f"data: {json.dumps(event)}\n\n"
            finally:  # also when the client hangs up (the generator is closed): the request is recorded
                guard.metrics.latency.labels("upstream").observe(time.perf_counter() - t)
                guard.finish(gr, None if failure else "".join(text), failure, True)  # quick: never waits for the queue
            if failure is None:
                yield chunk({}, ending["finish_reason"] or "stop")
                yield "data: [DONE]\n\n"
                guard.metrics.latency.labels("total").observe(time.perf_counter() - start)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


def _fetcher(limit: int) -> Any:
    """Fetch an http(s) image, refusing past ``limit`` bytes (only with --allow-image-urls)."""
    import httpx

    async def fetch(url: str) -> tuple[bytes, str]:
        try:
            async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
                async with client.stream("GET", url) as reply:
                    reply.raise_for_status()
                    data = b""
                    async for part in reply.aiter_bytes():
                        data += part
                        if len(data) > limit:
                            raise BadRequest(413, f"the image at {url} is over the limit of {limit} bytes", "too_large")
                    mime = reply.headers.get("content-type", "image/png").split(";")[0].strip().lower()
        except httpx.HTTPError as err:
            raise BadRequest(400, f"the image at {url} could not be fetched ({err})") from err
        return data, mime

    return fetch
