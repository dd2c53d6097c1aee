"""The one interface every defense implements, with its lifecycle declared rather than probed for.

A defense wraps a built inner model (adapted to the inner-model protocol, :mod:`.inner`) and turns items into
responses. Its lifecycle, the same whoever drives it (the VLMEvalKit adapter, the lmms-eval adapter, the Python
API, a server):

1. :meth:`Defense.begin` once per dataset (stream) with what the runner knows: rows already finished, order;
2. :meth:`Defense.respond` for each micro-batch of items, in stream order;
3. :meth:`Defense.flush` at the end of a dataset (a pipelined defense stores its pending work);
4. :meth:`Defense.close` at the end of the run (EchoSafe compacts its banks).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from .inner import Content, Inner, adapt
from .item import Item, Response
from .run import DatasetRun, ResumeUnknownError
from .trace import TraceWriter

log = logging.getLogger(__name__)


class Defense(ABC):
    """Base class: the inner model (``inner``: as built; ``model``: its protocol adapter), the runs, the traces."""

    # A defense whose settings are a dataclass names it here; the registry then passes it only the shared
    # settings (`encoders`, `inner_settings` in wrappers/defenses.yaml) it has fields for. None: all of them.
    SETTINGS: type | None = None
    # Whether, under torchrun, the ranks share one stream (the runner then drives it in global steps).
    shares_stream: bool = False

    def __init__(
        self, inner: Any, name: str | None = None, run_dir: str | Path | None = None, inner_name: str | None = None
    ) -> None:
        self.inner = inner
        self.model: Inner = adapt(inner)
        self.inner_name = inner_name or type(inner).__name__
        self.name = name or f"{type(self).__name__}_{self.inner_name}"
        self.run_dir = Path(run_dir) if run_dir else Path("outputs") / self.name
        self._runs: dict[str, DatasetRun] = {}
        self._traces: dict[str, TraceWriter] = {}

    @classmethod
    def accepts_setting(cls, key: str) -> bool:
        return cls.SETTINGS is None or key in {f.name for f in fields(cls.SETTINGS)}

    @classmethod
    def planned_batched(cls, inner_batched: bool, settings: dict[str, Any]) -> bool:
        """Whether `respond` gains from micro-batches (several items decoded together, or a pipelined stream),
        known before anything is built; a defense that answers one item at a time says False and its runners hand
        it one item per call. Batch size is then part of what the row computes (it decides which insights an
        item can see) and of its run identity."""
        return False

    @property
    def batched(self) -> bool:
        settings = getattr(self, "settings", None)
        return self.planned_batched(self.model.batched, asdict(settings) if is_dataclass(settings) else {})

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def begin(self, run: DatasetRun) -> None:
        """Before the first item of ``run.name``; a different hand-off for that dataset replaces the earlier one,
        the same one changes nothing. Rows without pair ids are announced, as the twin guard and per-category
        memory need them."""
        if self._runs.get(run.name) == run:
            return
        self._runs[run.name] = run
        self._traces.pop(run.name, None)
        if run.row_metadata == "index":
            log.warning(
                "%s x %s: the dataset's rows carry no pair ids or categories, so no twin guard applies and no "
                "per-category setting can be used (row_metadata: index in the trace)",
                self.name,
                run.name,
            )
        elif run.row_metadata == "none":
            log.warning(
                "%s x %s: no runner handed over the dataset's rows: the trace names no rows, no twin guard "
                "applies, and earlier results of this dataset cannot be continued (row_metadata: none in the "
                "trace); run it through run.py or lmms-eval",
                self.name,
                run.name,
            )

    @abstractmethod
    def respond(self, items: list[Item]) -> list[Response]:
        """One micro-batch of items of one dataset, in stream order; one response per item."""

    def prefetch(self, items: list[Item]) -> None:  # noqa: B027 - a hint most defenses need not act on
        """A hint from the loop, before it hands over the micro-batch before ``items``: these come next. A defense
        may start work that depends on the items alone (EchoSafe: the text keys), never on what it answers
        before them, so the outcome is the same whether or not the hint comes."""

    def flush(self) -> None:  # noqa: B027 - a lifecycle step most defenses need not act on
        """End of a dataset: store whatever is still pending (nothing, unless the defense pipelines)."""

    def close(self) -> None:  # noqa: B027 - a lifecycle step most defenses need not act on
        """End of the run."""

    # ---- helpers -------------------------------------------------------------------------------------------
    def run_for(self, dataset: str) -> DatasetRun:
        """What the runner said about ``dataset``; a dataset nobody began is a fresh stream whose rows come with
        its items (the Python API)."""
        if dataset not in self._runs:
            self.begin(DatasetRun(dataset, "given"))
        return self._runs[dataset]

    def trace_for(self, dataset: str, kind: str = "defense", write: bool = True) -> TraceWriter:
        """The per-item trace ``<run_dir>/<name>_<dataset>_<kind>_trace.jsonl`` for one dataset. Opened once per
        dataset; it keeps only the lines of rows the host has already finished (none on a fresh run).
        ``write=False``: read it, leave the file to the process that writes it."""
        if dataset not in self._traces:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            run = self.run_for(dataset)
            path = self.run_dir / f"{self.name}_{dataset}_{kind}_trace.jsonl"
            if run.done is None and path.exists() and path.stat().st_size:
                raise ResumeUnknownError(
                    f"{path} holds items of an earlier run, but no runner said which rows the host has finished, "
                    "so it can be neither continued nor cut back; run it through run.py (--reuse), or delete it"
                )
            done = run.done or frozenset()
            self._traces[dataset] = TraceWriter(path, keep=lambda rec: str(rec.get("row_index")) in done, write=write)
        return self._traces[dataset]

    def ask(self, message: Content, dataset: str | None) -> str:
        """One call of the inner model, as the model answers a single request."""
        return self.model.ask(message, dataset)


class ConfiguredDefense(Defense):
    """A defense whose settings are a frozen dataclass (``SETTINGS``): checked when it is built (a key the
    dataclass has no field for is an error) and written with the row's name, class and inner model, and what
    `describe` adds, to ``<run_dir>/<name>_defense_config.json``."""

    NEEDS_LOGITS = False  # a method that reads next-token logits runs on the plugin's transformers backend only

    def __init__(
        self,
        inner: Any,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        inner_name: str | None = None,
    ) -> None:
        super().__init__(inner, name=name, run_dir=run_dir, inner_name=inner_name)
        assert self.SETTINGS is not None, f"{type(self).__name__} must set SETTINGS"
        if self.NEEDS_LOGITS and self.model.path != "kv-session":
            raise TypeError(
                f"{self.name}: {type(self).__name__} reads the inner model's next-token logits, so it runs on the "
                f"plugin's transformers backend only (wrappers/models.yaml, class TransformersVLM); "
                f"{self.inner_name} is a {self.model.path!r} model"
            )
        known = {f.name for f in fields(self.SETTINGS)}
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            raise ValueError(f"{type(self).__name__} ({self.name}): unknown settings {unknown}; valid: {sorted(known)}")
        self.settings = self.SETTINGS(**(settings or {}))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "name": self.name,
            "defense": type(self).__name__,
            "inner": self.inner_name,
            "settings": asdict(self.settings),
            **self.describe(),
        }
        (self.run_dir / f"{self.name}_defense_config.json").write_text(json.dumps(record, indent=2, default=str))

    def describe(self) -> dict[str, Any]:
        """Extra facts for the config file (which auxiliary models were loaded)."""
        return {}


class SingleItemDefense(ConfiguredDefense):
    """A defense that answers one item at a time, with settings in a frozen dataclass (``SETTINGS``), writing
    one trace line per item.

    Subclasses implement ``answer_one(images, question, dataset) -> (answer, record)``; the record (the exact
    prompts sent, branches taken) lands in ``<run_dir>/<name>_<dataset>_defense_trace.jsonl`` beside the row's
    ids, and the settings in ``<run_dir>/<name>_defense_config.json``.
    """

    def respond(self, items: list[Item]) -> list[Response]:
        return [self._respond_one(item) for item in items]

    def _respond_one(self, item: Item) -> Response:
        row = item.row
        start = time.perf_counter()
        answer, record = self.answer_one(item.paths, item.question, item.dataset)
        line = {
            "row_index": row.get("index"),
            **{k: row.get(k) for k in ("pair_id", "category", "mode", "label")},
            "row_metadata": self.run_for(item.dataset).row_metadata,
            "defense": type(self).__name__,
            **record,
            "seconds": round(time.perf_counter() - start, 6),
        }
        self.trace_for(item.dataset).write(line)
        return Response(answer, line)

    @abstractmethod
    def answer_one(self, images: list[str], question: str, dataset: str) -> tuple[str, dict[str, Any]]:
        """(the defended answer, what was done: JSON-serialisable, goes to the trace)."""


def image_message(images: list[str], text: str) -> Content:
    """Image parts, then one text part."""
    return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]
