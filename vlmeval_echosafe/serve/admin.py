"""The admin API (``Authorization: Bearer <admin token>``) and the memory page that uses it.

Per tenant: list and search insights (id, decision, scenario, created, how often retrieved, quarantined), show one
with its provenance (the request that wrote it and when), quarantine or delete one (withheld from retrieval from
the next request on), export the bank as a .tar.gz and import one (a warm start, e.g. from a benchmark run).
"""

from __future__ import annotations

import hmac
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from .chat import BadRequest

STATIC = Path(__file__).with_name("static")


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def admin_router(guard: Any) -> APIRouter:
    router = APIRouter()

    def check(request: Request, tenant: str | None = None) -> None:
        token = bearer(request) or ""
        if not hmac.compare_digest(token.encode(), guard.config.admin_token.encode()):
            raise BadRequest(401, "the admin API needs Authorization: Bearer <admin token>", "invalid_admin_token")
        if tenant is not None and tenant not in guard.logs:
            raise BadRequest(404, f"no tenant {tenant!r}; tenants: {sorted(guard.logs)}", "tenant_not_found")

    def view(tenant: str, i: int, insight: dict, meta: dict) -> dict[str, Any]:
        logs = guard.logs[tenant]
        source = logs.requests.get(str(meta.get("row_index")), {})
        return {
            "id": i,
            "decision": insight.get("decision"),
            "scenario": insight.get("scenario") or insight.get("question"),
            "kind": insight.get("kind", "insight"),
            "created": source.get("received") or meta.get("imported"),
            "retrieved": logs.retrieved[i],
            "quarantined": i in logs.quarantined,
            "origin": meta.get("origin", "served"),
            "request": meta.get("row_index"),
        }

    def listing(tenant: str, query: str | None = None) -> list[dict[str, Any]]:
        with guard.bank_lock:
            bank = guard.bank(tenant)
            entries = bank.entries() if bank is not None else []
        deleted, q = guard.logs[tenant].deleted, (query or "").lower()
        return [
            view(tenant, i, insight, meta)
            for i, (insight, meta) in enumerate(entries)
            if i not in deleted and q in json.dumps(insight, ensure_ascii=False).lower()
        ]

    @router.get("/memory")
    async def memory_page() -> FileResponse:
        return FileResponse(STATIC / "memory.html", media_type="text/html")

    @router.get("/admin/tenants")
    async def tenants(request: Request) -> list[dict[str, Any]]:
        check(request)
        out = []
        for tenant, logs in sorted(guard.logs.items()):
            with guard.bank_lock:
                bank = guard.bank(tenant)
                size = len(bank) if bank is not None else 0
            out.append({"tenant": tenant, "insights": size - len(logs.deleted), "quarantined": len(logs.quarantined)})
        return out

    @router.get("/admin/tenants/{tenant}/insights")
    async def insights(tenant: str, request: Request) -> list[dict[str, Any]]:
        check(request, tenant)
        return listing(tenant)

    @router.get("/admin/tenants/{tenant}/search")
    async def search(tenant: str, q: str, request: Request) -> list[dict[str, Any]]:
        """Insights whose text contains ``q`` (case-insensitive)."""
        check(request, tenant)
        return listing(tenant, q)

    @router.get("/admin/tenants/{tenant}/insights/{insight_id}")
    async def show(tenant: str, insight_id: int, request: Request) -> dict[str, Any]:
        check(request, tenant)
        with guard.bank_lock:
            bank = guard.bank(tenant)
            entries = bank.entries() if bank is not None else []
        if not 0 <= insight_id < len(entries) or insight_id in guard.logs[tenant].deleted:
            raise BadRequest(404, f"tenant {tenant!r} has no insight {insight_id}", "insight_not_found")
        insight, meta = entries[insight_id]
        provenance = guard.logs[tenant].requests.get(str(meta.get("row_index")))
        return {**view(tenant, insight_id, insight, meta), "insight": insight, "meta": meta, "provenance": provenance}

    async def decide(tenant: str, insight_id: int, request: Request, action: str) -> dict[str, Any]:
        check(request, tenant)
        raw = await request.body()
        try:
            reason = str(json.loads(raw).get("reason", "")) if raw.strip() else ""
        except (json.JSONDecodeError, AttributeError) as err:
            raise BadRequest(400, 'the body must be empty or a JSON object {"reason": "..."}') from err
        try:
            return guard.decide(tenant, action, insight_id, reason)
        except KeyError as err:
            raise BadRequest(404, str(err.args[0]), "insight_not_found") from err

    @router.post("/admin/tenants/{tenant}/insights/{insight_id}/quarantine")
    async def quarantine(tenant: str, insight_id: int, request: Request) -> dict[str, Any]:
        return await decide(tenant, insight_id, request, "quarantine")

    @router.delete("/admin/tenants/{tenant}/insights/{insight_id}")
    async def delete(tenant: str, insight_id: int, request: Request) -> dict[str, Any]:
        return await decide(tenant, insight_id, request, "delete")

    @router.get("/admin/tenants/{tenant}/export")
    async def export(tenant: str, request: Request) -> Response:
        check(request, tenant)
        with tempfile.TemporaryDirectory() as tmp:
            folder = guard.export_bank(tenant, Path(tmp))
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(folder, arcname=tenant)
        name = f"{tenant}-bank.tar.gz"
        return Response(
            buf.getvalue(),
            media_type="application/gzip",
            headers={"Content-Disposition": f"attachment; filename={name}"},
        )

    @router.post("/admin/tenants/{tenant}/import")
    async def import_(tenant: str, request: Request) -> dict[str, Any]:
        """Body: a .tar.gz holding one saved bank folder (as export gives, or a benchmark run's echosafe_bank/X)."""
        check(request, tenant)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(fileobj=io.BytesIO(await request.body()), mode="r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError) as err:
                raise BadRequest(400, f"the body is not a .tar.gz of a bank folder ({err})") from err
            banks = [p.parent for p in Path(tmp).rglob("CURRENT")]
            if len(banks) != 1:
                raise BadRequest(
                    400, f"the archive must hold exactly one bank folder (one CURRENT file), found {len(banks)}"
                )
            try:
                added = guard.import_bank(tenant, banks[0])
            except ValueError as err:
                raise BadRequest(400, str(err), "bank_mismatch") from err
        return {"tenant": tenant, "imported": added}

    return router
