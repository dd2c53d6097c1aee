"""The one interface every defense implements: a VLMEvalKit model that wraps another VLMEvalKit model.

A defense is built from an inner model's registry name (any ``supported_VLM`` entry: the plugin's backends,
the host's local models, API models) or from a model object, and turns one message into one response using
that inner model. It stays ``is_api = False`` so the host runs it one sample at a time (a stateful defense
must see items in stream order).
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

from .rows import RowLookup, done_rows
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


def split_message(message: list[dict[str, str]]) -> tuple[list[str], str]:
    """(image paths, question text) of a VLMEvalKit message."""
    images = [m["value"] for m in message if m["type"] == "image"]
    text = "\n".join(m["value"] for m in message if m["type"] == "text")
    return images, text


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
        self.dataset = None  # the host dataset object, learned from set_dump_image
        self._lookups: dict[int, RowLookup] = {}
        self._traces: dict[str, TraceWriter] = {}

    # A defense whose settings are a dataclass names it here; the registry then passes it only the shared
    # settings (`encoders`, `inner_settings` in wrappers/defenses.yaml) it has fields for. None: all of them.
    SETTINGS: type | None = None

    @classmethod
    def accepts_setting(cls, key: str) -> bool:
        return cls.SETTINGS is None or key in {f.name for f in fields(cls.SETTINGS)}

    def row_for(self, images: list[str], question: str) -> dict[str, Any]:
        """The dataset row of a message (index, pair_id, category, mode, label where the dataset has them)."""
        if self.dataset is None:
            return {}
        lookup = self._lookups.get(id(self.dataset))
        if lookup is None:
            lookup = self._lookups[id(self.dataset)] = RowLookup(self.dataset)
        return lookup.find(images, question)

    def trace_for(
        self, dataset: str, kind: str = "defense", done: set[str] | None = None, write: bool = True
    ) -> TraceWriter:
        """The per-item trace ``<run_dir>/<name>_<dataset>_<kind>_trace.jsonl`` for one dataset. Opened once per
        dataset; on resume it keeps only the lines of rows the host has already finished. ``write=False``: read
        it, leave the file to the process that writes it."""
        if dataset not in self._traces:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            done = done_rows(self.run_dir, self.name, dataset) if done is None else done
            path = self.run_dir / f"{self.name}_{dataset}_{kind}_trace.jsonl"
            keep = lambda rec: str(rec.get("row_index")) in done  # noqa: E731
            self._traces[dataset] = TraceWriter(path, keep=keep, write=write)
        return self._traces[dataset]

    def set_dump_image(self, dump_image_func: Any) -> None:
        """Forwarded to the inner model; the bound method also tells which dataset object is being run, the only
        link the host gives from a message back to its row."""
        super().set_dump_image(dump_image_func)
        if hasattr(self.inner, "set_dump_image"):
            self.inner.set_dump_image(dump_image_func)
        self.dataset = getattr(dump_image_func, "__self__", None)

    def use_custom_prompt(self, dataset: str) -> bool:
        from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

        if dataset in MMSafetyBenchPP.supported_datasets():
            return False
        return bool(getattr(self.inner, "use_custom_prompt", lambda _: False)(dataset))

    def build_prompt(self, line: Any, dataset: str | None = None) -> Any:
        return self.inner.build_prompt(line, dataset=dataset)

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
        row = self.row_for(images, question)
        start = time.perf_counter()
        answer, record = self.respond(images, question, dataset)
        self.trace_for(dataset).write(
            {
                "row_index": row.get("index"),
                **{k: row.get(k) for k in ("pair_id", "category", "mode", "label")},
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
