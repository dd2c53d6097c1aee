"""The one interface every defense implements: a VLMEvalKit model that wraps another VLMEvalKit model.

A defense is built from an inner model's registry name (any ``supported_VLM`` entry: the plugin's backends,
the host's local models, API models) or from a model object, and turns one message into one response using
that inner model. It stays ``is_api = False`` so the host runs it one sample at a time (a stateful defense
must see items in stream order). Before a dataset's first item the runner calls :meth:`Defense.begin` with what
the defense needs to know about the dataset's rows (:mod:`.rows`); the host gives a model nothing of it.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from abc import abstractmethod
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from vlmeval.vlm.base import BaseModel

from .rows import DatasetRun, ResumeUnknownError, RowNotFoundError, split_message
from .trace import TraceWriter

log = logging.getLogger(__name__)


def build_inner(inner: str | BaseModel, **kwargs: Any) -> BaseModel:
    """The inner model: a registry name is built with the kwargs its constructor accepts (the host passes
    ``use_vllm=`` to some names); an object is used as is."""
    if not isinstance(inner, str):
        return inner
    from vlmeval.config import supported_VLM

    if inner not in supported_VLM:
        import difflib

        close = difflib.get_close_matches(inner, list(supported_VLM), n=3)
        raise KeyError(
            f"inner model {inner!r} is not a VLMEvalKit model" + (f"; did you mean {close}?" if close else "")
        )
    factory = supported_VLM[inner]
    target = getattr(factory, "func", factory)
    params = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    passed = {k: v for k, v in kwargs.items() if takes_any or k in params}
    dropped = sorted(set(kwargs) - set(passed))
    if dropped:
        log.info("inner model %s does not take %s; not forwarded", inner, dropped)
    return factory(**passed)


class Defense(BaseModel):
    """Base class: inner model, dataset handle, prompt routing. Subclasses implement ``defend``."""

    is_api = False
    INTERLEAVE = False
    allowed_types = ["text", "image"]

    def __init__(
        self, inner: str | BaseModel, name: str | None = None, run_dir: str | Path | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        self.inner = build_inner(inner, **kwargs)
        self.inner_name = inner if isinstance(inner, str) else type(inner).__name__
        self.name = name or f"{type(self).__name__}_{self.inner_name}"
        self.run_dir = Path(run_dir) if run_dir else Path("outputs") / self.name
        self._runs: dict[str, DatasetRun] = {}  # by dataset name, from the runner (begin)
        self._traces: dict[str, TraceWriter] = {}

    # A defense whose settings are a dataclass names it here; the registry then passes it only the shared
    # settings (`encoders`, `inner_settings` in wrappers/defenses.yaml) it has fields for. None: all of them.
    SETTINGS: type | None = None

    @classmethod
    def accepts_setting(cls, key: str) -> bool:
        return cls.SETTINGS is None or key in {f.name for f in fields(cls.SETTINGS)}

    def begin(self, run: DatasetRun) -> None:
        """The runner's hand-off before the first item of ``run.name`` (VLMEvalKit: the launcher's `infer_data`,
        lmms-eval: the adapter); a different hand-off for that dataset replaces the earlier one, the same one
        changes nothing. Rows without pair ids are announced, as the twin guard and per-category memory need them."""
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

    def run_for(self, dataset: str) -> DatasetRun:
        """What the runner said about ``dataset``. An MM-SafetyBench++ dataset the runner said nothing about is an
        error (its items need their pair ids); any other dataset runs with no row metadata, announced."""
        run = self._runs.get(dataset)
        if run is None:
            from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

            if dataset in MMSafetyBenchPP.supported_datasets():
                raise RowNotFoundError(
                    f"{self.name} got an item of {dataset} but no runner handed over the dataset's rows (the row "
                    "of each prompt, which rows are finished): run it through run.py or lmms-eval, or call "
                    "begin(DatasetRun(...)) first"
                )
            run = DatasetRun(dataset, rows=None, done=None)
            self.begin(run)
        return run

    def row_for(self, dataset: str, images: list[str], question: str) -> dict[str, Any]:
        """The dataset row of a message (index, and pair_id, category, mode, label where the dataset has them);
        a message whose prompt the dataset did not register raises :class:`~.rows.RowNotFoundError`."""
        return self.run_for(dataset).find(images, question)

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

    def set_dump_image(self, dump_image_func: Any) -> None:
        """Forwarded to the inner model (its custom prompts dump images through it)."""
        super().set_dump_image(dump_image_func)
        if hasattr(self.inner, "set_dump_image"):
            self.inner.set_dump_image(dump_image_func)

    def use_custom_prompt(self, dataset: str) -> bool:
        from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

        if dataset in MMSafetyBenchPP.supported_datasets():
            return False
        return bool(getattr(self.inner, "use_custom_prompt", lambda _: False)(dataset))

    def build_prompt(self, line: Any, dataset: str | None = None) -> Any:
        """The inner model's custom prompt, registered with its row like the dataset's own prompts."""
        message = self.inner.build_prompt(line, dataset=dataset)
        run = self._runs.get(dataset or "")
        if run is not None and run.rows is not None:
            run.rows.register(message, line)
        return message

    def ask(self, message: list[dict[str, str]], dataset: str | None) -> str:
        """One call of the inner model (through its own validation)."""
        return self.inner.generate(message=[dict(m) for m in message], dataset=dataset)

    def generate_inner(self, message: list[dict[str, str]], dataset: str | None = None) -> str:
        return self.defend(message, dataset)

    @abstractmethod
    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        """Turn one message into the defended response, using ``self.inner``."""


class TracedDefense(Defense):
    """A defense with settings in a frozen dataclass (``SETTINGS``) that writes one trace line per item.

    Subclasses implement ``respond(images, question, dataset) -> (answer, record)``; the record (the exact
    prompts sent, branches taken) lands in ``<run_dir>/<name>_<dataset>_defense_trace.jsonl`` beside the row's
    ids, and the settings in ``<run_dir>/<name>_defense_config.json``.
    """

    def __init__(
        self,
        inner: str | BaseModel,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, name=name, run_dir=run_dir, **kwargs)
        assert self.SETTINGS is not None, f"{type(self).__name__} must set SETTINGS"
        known = {f.name for f in fields(self.SETTINGS)}
        unknown = sorted(set(settings or {}) - known)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown settings {unknown}; valid: {sorted(known)}")
        self.settings = self.SETTINGS(**(settings or {}))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "name": self.name,
            "defense": type(self).__name__,
            "inner": self.inner_name,
            "settings": asdict(self.settings),
        }
        (self.run_dir / f"{self.name}_defense_config.json").write_text(json.dumps(record, indent=2))

    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        dataset = dataset or "unknown"
        images, question = split_message(message)
        row = self.row_for(dataset, images, question)
        start = time.perf_counter()
        answer, record = self.respond(images, question, dataset)
        self.trace_for(dataset).write(
            {
                "row_index": row.get("index"),
                **{k: row.get(k) for k in ("pair_id", "category", "mode", "label")},
                "row_metadata": self.run_for(dataset).row_metadata,
                "defense": type(self).__name__,
                **record,
                "seconds": round(time.perf_counter() - start, 6),
            }
        )
        return answer

    @abstractmethod
    def respond(self, images: list[str], question: str, dataset: str) -> tuple[str, dict[str, Any]]:
        """(the defended answer, what was done: JSON-serialisable, goes to the trace)."""


def image_message(images: list[str], text: str) -> list[dict[str, str]]:
    """A VLMEvalKit message: the images, then one text part."""
    return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]
