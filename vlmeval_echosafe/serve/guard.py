"""The guard's state: one EchoSafe defense whose inner model is the upstream, one bank per tenant, the
governance logs and the reflection queue.

Each tenant is its own stream (``Item.dataset`` = the tenant, ``reset: dataset``), so a tenant's requests read
and write only its own bank. A request runs :meth:`Guard.prepare` (embed and retrieve, on one thread since the
encoders are not thread-safe, in micro-batches of the requests that arrive together: :mod:`.batcher`), is
answered by the upstream, then :meth:`Guard.finish` hands its reflection to the queue. On start every tenant's
bank is reloaded from its append-only log, the trace and the request log kept whole (every row the server
answered counts as finished).
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..api import load_defense
from ..core.inner import Answered
from ..core.item import Item, Response
from ..core.run import DatasetRun
from ..core.trace import read_trace
from ..echosafe.deferred import EchoSafeDeferred, Prepared
from ..memory import MemoryBank
from ..models.served import FAIL_MSG, ServedVLM
from .batcher import RetrievalBatcher
from .config import GuardConfig
from .governance import TenantLogs, now
from .metrics import GuardMetrics
from .reflector import Reflector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardRequest:
    """One request between retrieval and its answer."""

    id: str
    tenant: str
    received: str
    prepared: Prepared
    messages: list[dict]

    @property
    def insight_ids(self) -> list[int]:
        """The insights retrieved for it (they are in its answer turn)."""
        return [h.id for h in self.prepared.items[0].hits]


class Guard:
    def __init__(self, config: GuardConfig) -> None:
        self.config = config
        lim = config.limits
        self.defense = load_defense(
            f"{config.defense}_{config.model}",
            config.work_dir,
            base_url=config.upstream,
            key=config.upstream_key,
            model={"timeout": lim.upstream_timeout, "retry": lim.upstream_retries},
        )
        if not isinstance(self.defense, EchoSafeDeferred) or self.defense.model.path != "served-chat":
            raise TypeError(
                f"{self.defense.name}: the guard runs an EchoSafe row around a served model (--defense EchoSafe, "
                "EchoSafe-NoReflection, EchoSafe-k3, ...)"
            )
        if self.defense.settings.reset != "dataset" or self.defense.settings.staleness:
            raise ValueError(
                f"{self.defense.name}: the guard keeps one bank per tenant and reflects in its own queue: use a row "
                "with reset: dataset and staleness: 0"
            )
        self.metrics = GuardMetrics()
        self.bank_lock = threading.Lock()  # readers (retrieval, admin) and the one writer
        self.batcher = RetrievalBatcher(self._prepare_batch)
        self.root = Path(config.work_dir) / "guard"
        self.logs: dict[str, TenantLogs] = {}
        for tenant in config.tenants:
            self._open(tenant)
        self.reflector = Reflector(self.defense, self.bank_lock, self.metrics, lim.queue_size, lim.reflect_workers)

    # ---- tenants --------------------------------------------------------------------------------------------
    def bank_path(self, tenant: str) -> Path:
        return self.defense.run_dir / "echosafe_bank" / tenant

    def _open(self, tenant: str) -> None:
        """Reload the tenant's bank: every row the bank, the trace or the request log names counts as finished,
        so nothing is cut back; then withhold what operators quarantined or deleted."""
        logs = self.logs[tenant] = TenantLogs(self.root / tenant)
        done = set(logs.requests)
        trace = self.defense.run_dir / f"{self.defense.name}_{tenant}_echosafe_trace.jsonl"
        if trace.exists():
            done |= {str(r.get("row_index")) for r in read_trace(trace)}
        if MemoryBank.exists(self.bank_path(tenant)):
            done |= {str(meta.get("row_index")) for _, meta in MemoryBank.load(self.bank_path(tenant)).entries()}
        self.defense.begin(DatasetRun(tenant, "given", done=frozenset(done)))
        self.defense.withhold(tenant, logs.withheld)
        with self.bank_lock:
            bank = self.defense.bank_of(tenant)
        log.info("tenant %s: %d insights loaded", tenant, len(bank) if bank is not None else 0)

    def bank(self, tenant: str) -> MemoryBank | None:
        """The tenant's bank (read it while holding ``bank_lock``)."""
        return self.defense.bank_of(tenant)

    # ---- a request --------------------------------------------------------------------------------------------
    async def prepare(self, tenant: str, question: str, images: list[str]) -> GuardRequest:
        """Embed and retrieve for one request (batched with the requests arriving meanwhile) and build its
        upstream messages."""
        row = {"index": f"req-{uuid.uuid4().hex[:16]}", "received": now()}
        return await self.batcher.submit(Item(question, tuple(images), row, tenant))

    def _prepare_batch(self, items: list[Item]) -> list[GuardRequest]:
        """On the retrieval thread: one encoder call for the batch, then each item's retrieval and answer turn."""
        both = self.defense.prepare(items, lock=self.bank_lock)
        return [
            GuardRequest(
                item.row["index"],
                item.dataset,
                item.row["received"],
                Prepared([one], [turn], both.dataset),
                [{"role": "user", "content": ServedVLM.turn(turn)}],
            )
            for item, one, turn in zip(items, both.items, both.turns, strict=True)
        ]

    def finish(self, req: GuardRequest, answer: str | None, error: str | None, streamed: bool) -> Response:
        """Record the answer (or the upstream failure: a trace line, never an insight) and queue the reflection;
        never waits for the queue."""
        ok = answer is not None
        text = answer if ok else f"{FAIL_MSG} ({error})"
        # The served-chat adapter's state: each row's first turn as sent, and whether its answer came back.
        answered = Answered(req.prepared.turns, [text], [(req.messages[0]["content"], ok)])
        responses, pending = self.defense.deliver(req.prepared, answered)
        queued = self.reflector.submit(pending)
        self.logs[req.tenant].record_request(
            {
                "request": req.id,
                "received": req.received,
                "retrieved": req.insight_ids,
                "status": "answered" if ok else "upstream_error",
                "error": error,
                "stream": streamed,
                "reflection": "queued" if queued else "dropped: queue full",
            }
        )
        return responses[0]

    # ---- governance ---------------------------------------------------------------------------------------------
    def decide(self, tenant: str, action: str, insight_id: int, reason: str = "") -> dict:
        """Quarantine or delete one insight: durable in the governance log first, then withheld from retrieval."""
        with self.bank_lock:
            bank = self.bank(tenant)
            if bank is None or not 0 <= insight_id < len(bank) or insight_id in self.logs[tenant].deleted:
                raise KeyError(f"tenant {tenant!r} has no insight {insight_id}")
            rec = self.logs[tenant].decide(action, insight_id, reason)
            self.defense.withhold(tenant, self.logs[tenant].withheld)
        return rec

    def import_bank(self, tenant: str, folder: Path) -> int:
        """Append every entry of the bank saved in ``folder`` to the tenant's bank (marked ``origin: warm``), made
        durable before returning; the keys must come from the same encoders. Returns how many were added."""
        from ..memory.persist import read_bank

        snap = read_bank(folder)
        if snap.encoders != self.defense.encoder_ids:
            raise ValueError(
                f"the bank was built with encoders {snap.encoders}, this guard keys with {self.defense.encoder_ids}"
            )
        with self.bank_lock:
            bank = self.bank(tenant)
            for key, (insight, meta) in zip(snap.vectors, snap.records, strict=True):
                bank.add(key, insight, {**meta, "origin": "warm", "imported": now()})
            bank.save(self.bank_path(tenant))
        return len(snap.records)

    def export_bank(self, tenant: str, into: Path) -> Path:
        """A copy of the tenant's bank folder, consistent (no write in between)."""
        with self.bank_lock:
            self.bank(tenant)
            return Path(shutil.copytree(self.bank_path(tenant), into / tenant))

    def close(self) -> None:
        self.reflector.close()
        self.batcher.close()
