"""EchoSafe: a training-free defense with a memory of self-reflected safety insights.

Per item: embed (text ⊕ image) → retrieve the top-k insights → answer with them in the prompt, judging the
request's safety in context first → self-reflect with the same inner model into an abstract insight → store
(key, insight). The bank starts empty and grows with use; the host's checkpoint decides which rows are done (the
runner says which, :meth:`Defense.begin`), and the bank is cut back to exactly those rows when a run resumes.
:meth:`EchoSafe.close` ends a run with every bank compacted to a snapshot. The method is written once against the
inner-model protocol (`inner.py`), so it is the same algorithm on every kind of inner model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import checked_message
from ..datasets import order as stream_order
from ..encoders import KeyEncoder
from ..judges.base import INFER_FAIL_MARKERS
from ..memory import MemoryBank
from ..models.constrained import Constraint
from . import echosafe_prompts as prompts
from .base import Defense, split_message
from .inner import Answered, Reply, adapt, adapter_class
from .insight import InsightError, format_insight, parse_reflection, validate_insight
from .rows import DatasetRun, ResumeUnknownError
from .sync import StreamSync
from .trace import TraceWriter

log = logging.getLogger(__name__)

RESETS = ("dataset", "category", "never")
STALENESS = (0, 1)
RETRIEVALS = ("nearest", "random", "none")
STORES = ("insight", "exchange", "none")
EXCHANGE_CHARS = 300  # the NoReflection ablation keeps this much of the question and of the answer
TWIN_KEYS = ("dataset", "pair_id")  # meta keys the bank indexes, so the twin guard needs no scan
RUN_CONFIG = "echosafe_run.json"  # next to a bank: the settings it was built with, checked on resume


class ResumeMismatchError(ValueError):
    """A bank would be continued with settings other than those it was built with."""


@dataclass(frozen=True)
class EchoSafeSettings:
    """Every knob of the method; all of it is written to ``<name>_echosafe_config.json`` next to the results.

    Ablations each change one of these (``wrappers/defenses.yaml``, docs/echosafe.md)."""

    k: int = 5  # insights retrieved per item (not given in the paper)
    # nearest: top-k by cosine; random: k random entries; none: no memory at all (nothing retrieved, so nothing is
    # reflected on or stored)
    retrieval: str = "nearest"
    # insight: the model's self-reflection; exchange: the raw question and answer (length-capped), "w/o
    # self-reflection"; none: read-only (a frozen warm-start bank, needs `memory`)
    store: str = "insight"
    safety_instruction: bool = True  # the "decide whether it is safe" instruction around the request
    twin_guard: bool = True  # never retrieve an entry written by an item of the same pair
    reset: str = "dataset"  # a separate bank per dataset, per dataset × category (uses the labels), or one
    memory: str | None = None  # a saved bank to start from (warm start)
    encoders: dict[str, Any] = field(default_factory=lambda: {"text": "minilm", "image": "inner"})
    reflect_tokens: int = 48  # cap per line of the reflection form (the plugin's backend enforces it)
    seed: int = 0  # for `retrieval: random`
    # 0: the exact algorithm (a micro-batch's insights are stored before the next micro-batch retrieves). 1: a
    # micro-batch's reflections decode in one batch with the next micro-batch's answers, so the bank lags one
    # micro-batch; needs the micro-batched runner (run.py --batch-size N >= 2), which flushes the last one
    staleness: int = 0

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("reset", self.reset, RESETS),
            ("retrieval", self.retrieval, RETRIEVALS),
            ("store", self.store, STORES),
        ):
            if value not in valid:
                raise ValueError(f"EchoSafe {name}={value!r}; expected one of {valid}")
        if type(self.k) is not int or self.k < 1:
            raise ValueError(f"EchoSafe k={self.k!r}; must be a whole number >= 1")
        if type(self.reflect_tokens) is not int or self.reflect_tokens < 1:
            raise ValueError(f"EchoSafe reflect_tokens={self.reflect_tokens!r}; must be a whole number >= 1")
        if self.staleness not in STALENESS or type(self.staleness) is not int:
            raise ValueError(f"EchoSafe staleness={self.staleness!r}; expected one of {STALENESS}")
        if self.staleness and not self.reflects:
            raise ValueError(
                "EchoSafe staleness=1 overlaps the self-reflection with the next answers; with "
                f"retrieval={self.retrieval!r} and store={self.store!r} there is no reflection: use staleness 0"
            )
        if self.store == "none" and not self.memory:
            raise ValueError("EchoSafe store=none reads a saved bank and never writes: set memory: /path/to/bank")
        if self.retrieval == "none" and self.memory:
            raise ValueError("EchoSafe retrieval=none uses no memory, so memory= would be ignored; drop one of them")

    @property
    def uses_memory(self) -> bool:
        return self.retrieval != "none"

    @property
    def writes(self) -> bool:
        return self.uses_memory and self.store != "none"

    @property
    def reflects(self) -> bool:
        return self.uses_memory and self.store == "insight"

    def labels_used(self) -> list[str]:
        """Benchmark labels the method reads (oracle information, reported with every result)."""
        return ["category"] if self.reset == "category" else []


def run_config(settings: EchoSafeSettings, reflection: dict[str, str], order: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes what a bank stores or what is retrieved from it; kept with the bank."""
    return {
        **asdict(settings),
        "prompt_version": prompts.PROMPT_VERSION,
        "reflection": reflection,
        "order": order,
    }


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def differing_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted names of the settings that differ (``k``, ``reflection.path``, ``order.seed``, ...)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{sub}" for sub in differing_keys(a, b)]
        elif a != b:
            out.append(key)
    return out


def check_resume(bank_path: Path, config: dict[str, Any], decided_later: tuple[str, ...] = ()) -> None:
    """Refuse to continue a bank built with other settings (raises ResumeMismatchError naming the keys);
    ``decided_later``: dotted keys not known yet (checked again once they are)."""
    saved_path = bank_path / RUN_CONFIG
    if not saved_path.exists():
        raise ResumeMismatchError(
            f"{bank_path}: this bank records no settings, so resuming it could mix two configurations; "
            "delete the folder (and the run's predictions) to start over, or use another --work-dir"
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    diff = [k for k in differing_keys(saved, config) if k not in decided_later]
    if diff:
        detail = ", ".join(f"{k}: {_lookup(saved, k)!r} -> {_lookup(config, k)!r}" for k in diff)
        raise ResumeMismatchError(
            f"{bank_path}: the run being resumed used other EchoSafe settings ({detail}); resume with the same "
            "settings, or start a new run in another --work-dir"
        )


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_planned_run(factory: Any, dataset: str, resuming: bool) -> None:
    """Before any model is built: refuse a run of a registered EchoSafe entry (``supported_VLM[name]``) that would
    continue, or reuse the predictions of, a bank built with other settings. ``resuming``: the host has this
    dataset's prediction file or checkpoint (it would then skip the rows it holds)."""
    cls = getattr(factory, "func", None)
    if not (isinstance(cls, type) and issubclass(cls, EchoSafe)):
        return
    from vlmeval.config import supported_VLM

    kw = factory.keywords
    settings = EchoSafeSettings(**kw.get("settings", {}))
    inner = supported_VLM[kw["inner"]] if isinstance(kw["inner"], str) else kw["inner"]
    reflection = adapter_class(getattr(inner, "func", inner)).planned()
    # A served endpoint's decoding is known once the model is built; the first item's resume check compares it.
    later = tuple(f"reflection.{k}" for k, v in reflection.items() if v is None)
    config = run_config(settings, reflection, stream_order.requested().as_dict())
    banks = Path(kw["run_dir"]) / "echosafe_bank"
    if not settings.writes or not banks.is_dir():
        return
    for saved in sorted(banks.rglob(RUN_CONFIG)):
        namespace = saved.parent.relative_to(banks).parts
        if resuming and namespace[0] in (dataset, "all"):
            check_resume(saved.parent, config, decided_later=later)


def answer_failure(answer: Any) -> str | None:
    """Why an answer is not one (empty, or the host's failure string), or None."""
    if not isinstance(answer, str) or not answer.strip():
        return "empty answer"
    if any(marker in answer for marker in INFER_FAIL_MARKERS):
        return "inference failed"
    return None


@dataclass
class _Stream:
    """One bank and its position in the item stream."""

    id: str
    bank: MemoryBank
    path: Path | None  # None: never saved (read-only)
    pos: int = 0


@dataclass
class _Item:
    """One item on its way through a micro-batch."""

    images: list[str]
    question: str
    row: dict[str, Any]
    key: np.ndarray | None
    times: dict[str, float]
    stream: _Stream | None = None
    bank_size: int | None = 0  # None: not known (a row whose pipelined reflection was lost in a stop)
    hits: list = field(default_factory=list)
    answer: str = ""
    insight: dict | None = None
    decision: str | None = None  # the reflection's decision, also when the insight was rejected
    reason: str | None = None
    code: str | None = None
    written: int | None = None
    stream_pos: int = 0


@dataclass(frozen=True)
class _Embedded:
    """An item once its key is computed: what every rank of a shared stream needs to retrieve for it."""

    images: list[str]
    question: str
    row: dict[str, Any]
    key: np.ndarray | None
    embed_s: float


# What the rank that answers an item tells the others about it (the fields its answer and reflection set).
_OUTCOME = ("answer", "insight", "decision", "reason", "code", "times")


@dataclass
class _Pending:
    """A micro-batch answered but not yet reflected on (``staleness: 1``)."""

    items: list[_Item]
    answered: Answered
    dataset: str


class EchoSafe(Defense):
    """EchoSafe around any VLMEvalKit model; settings as keyword arguments (see EchoSafeSettings)."""

    # Under torchrun the ranks share one stream: the launcher's runner drives it in global steps (`generate_step`).
    shares_stream = True

    def __init__(
        self,
        inner: Any,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, name=name, run_dir=run_dir, **kwargs)
        self.sync = StreamSync.from_process_group()
        self.settings = EchoSafeSettings(**(settings or {}))
        if self.settings.staleness and self.sync.multi:
            raise RuntimeError(
                f"{self.name}: staleness=1 is not supported under torchrun (each rank would hold its own pending "
                "micro-batch); use staleness 0, or one process"
            )
        self.model = adapt(self.inner)
        self.keys = KeyEncoder(self.settings.encoders, inner=self.inner) if self.settings.uses_memory else None
        self.encoder_ids = self.keys.ids if self.keys else {}
        self._rng = np.random.default_rng(self.settings.seed)
        self._streams: dict[str, _Stream] = {}
        self._pending: _Pending | None = None  # staleness 1: the micro-batch whose reflections decode next
        self._checked_lost: set[str] = set()  # datasets whose trace was checked for reflections lost in a stop
        self._config = {
            "name": self.name,
            "inner": self.inner_name,
            "settings": asdict(self.settings),
            "memory": "on" if self.settings.uses_memory else "off",
            "encoders": self.encoder_ids,
            "prompt_version": prompts.PROMPT_VERSION,
            "reflection": self.model.describe() if self.settings.reflects else None,
            # reset: category routes each item by the benchmark's ground-truth category label
            "labels_used": self.settings.labels_used(),
            "streams": {},
        }
        self._write_config()

    # ---- setup -------------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.sync.persists:
            _write_json(self.run_dir / f"{self.name}_echosafe_config.json", self._config)

    def _namespace(self, dataset: str, row: dict[str, Any]) -> str:
        if self.settings.reset == "never":
            return "all"
        if self.settings.reset == "category":
            if "category" not in row:
                raise ValueError(
                    f"{self.name}: reset: category needs each row's category, and the rows of {dataset} carry none "
                    f"(row_metadata: {self.run_for(dataset).row_metadata}); use reset: dataset"
                )
            return f"{dataset}/{row['category']}"
        return dataset

    def _stream(self, dataset: str, row: dict[str, Any], dim: int) -> _Stream:
        ns = self._namespace(dataset, row)
        if ns in self._streams:
            return self._streams[ns]
        s = self.settings
        stream_id = f"{self.name}::{ns}"
        path = None if s.store == "none" else self.run_dir / "echosafe_bank" / ns
        run = self.run_for(dataset)
        order = run.order.as_dict()
        config = run_config(s, self.model.describe(), order)
        done = run.done
        resuming = path is not None and MemoryBank.exists(path)
        if resuming and done is None:
            raise ResumeUnknownError(
                f"{path} holds a bank of an earlier run, but no runner said which rows the host has finished, so it "
                "can be neither continued nor cut back; run it through run.py (--reuse), or delete the folder"
            )
        if resuming and done:
            check_resume(path, config)
        if resuming:
            bank = MemoryBank.load(path, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
        elif s.memory:
            bank = MemoryBank.load(s.memory, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
            # Warm-start entries are never this run's own, even when the saved bank came from the same wrapper.
            bank.update_meta(lambda m: {**m, "origin": "warm"})
        else:
            bank = MemoryBank(dim, self.encoder_ids, index_meta=TWIN_KEYS)
        trace = self.trace_for(dataset, "echosafe", write=self.sync.persists)
        self.sync.barrier()  # every rank has read the bank before the rank that persists rewrites it
        if s.staleness and dataset not in self._checked_lost:
            self._checked_lost.add(dataset)
            self._record_lost(run, trace)
        if path is not None:
            # Resume: keep warm-start entries and entries of finished rows; drop what the host will redo.
            dropped = bank.truncate(
                lambda m: (
                    m.get("origin") == "warm"
                    or m.get("stream") != stream_id
                    or m.get("dataset") != dataset
                    or str(m.get("row_index")) in (done or ())
                )
            )
            if dropped and self.sync.persists:
                log.warning(
                    "%s: dropped %d insights of rows the host will run again (%d rows finished, per %s)",
                    path,
                    dropped,
                    len(done or ()),
                    ", ".join(run.checkpoint) or "no checkpoint file",
                )
            if self.sync.persists:
                bank.save(path)
                _write_json(path / RUN_CONFIG, config)
        self._config["streams"][ns] = {
            "dataset": dataset,
            "order": order,
            "row_metadata": run.row_metadata,
            "config_hash": config_hash(config),
        }
        self._write_config()
        stream = self._streams[ns] = _Stream(stream_id, bank, path, trace.count(stream_id))
        return stream

    def _record_lost(self, run: DatasetRun, trace: TraceWriter) -> None:
        """A resumed ``staleness: 1`` run: rows the host finished whose reflection was still pending when the run
        stopped have no trace line and no insight. Each gets a trace line saying so (code ``lost``), in the order
        the host ran them, so every finished row is accounted for and stream positions stay in step."""
        traced = {str(r.get("row_index")) for r in trace.records}
        done = run.done or frozenset()
        for row in run.table:
            index = str(row["index"])
            if index not in done or index in traced:
                continue
            stream = f"{self.name}::{self._namespace(run.name, row)}"
            item = _Item([], "", row, None, times={}, bank_size=None)
            item.stream_pos = trace.count(stream)
            item.reason = "the run stopped before this finished row's pipelined reflection (staleness 1) was decoded"
            item.code = "lost"
            self._write_trace(item, run.name, 0, 0, stream)

    # ---- the loop ----------------------------------------------------------------------------------------
    # One item is a micro-batch of one. A batch of B items retrieves from the bank as it stood before the batch,
    # answers and reflects as one batch on the inner model, then writes the B insights in stream order; B = 1
    # is the sequential algorithm, through the same code. With `staleness: 1` a batch's reflections decode
    # together with the next batch's answers and are stored after that batch has retrieved: the bank lags one
    # micro-batch, and whoever drives the stream calls `flush` at its end.

    def begin(self, run: DatasetRun) -> None:
        """As :meth:`Defense.begin`; the dataset's streams are opened afresh from what the runner says."""
        if self._runs.get(run.name) == run:
            return
        super().begin(run)
        self._streams = {
            ns: st for ns, st in self._streams.items() if ns != run.name and not ns.startswith(f"{run.name}/")
        }

    def close(self) -> None:
        """End of a run: compact every bank this object wrote into a snapshot with an empty log. The runners call
        it after a dataset's last item; a run killed before it leaves snapshot + log, which loads as well. Under
        torchrun the rank that persists the banks compacts them."""
        if not self.sync.persists:
            return
        for stream in self._streams.values():
            if stream.path is not None:
                stream.bank.compact(stream.path)

    @property
    def supports_batch(self) -> bool:
        """Whether micro-batches are worth handing over: the inner model decodes several rows at once (the plugin's
        transformers backend), or the stream is pipelined (``staleness: 1``, which needs the batched runner)."""
        return self.model.batched or self.settings.staleness > 0

    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        if self.settings.staleness:
            raise RuntimeError(
                f"{self.name}: staleness=1 leaves each micro-batch's reflections for the next call, and a "
                "one-at-a-time loop never flushes the last ones; run it micro-batched (run.py --batch-size N with "
                "N >= 2, lmms-eval batch_size >= 2)"
            )
        self._single_process_only()
        return self.defend_batch([message], dataset)[0]

    def generate_batch(self, messages: list[list[dict[str, str]]], dataset: str | None = None) -> list[str]:
        """Several items, in stream order, as one micro-batch (the host's checks applied to each message)."""
        self._single_process_only()
        return self.defend_batch([checked_message(self, m) for m in messages], dataset)

    def generate_step(self, messages: list[list[dict[str, str]]], dataset: str | None = None) -> list[str]:
        """This rank's items of one global step of a shared stream (`sync.py`); every rank calls it once per
        step, also with no items. With one process it is `generate_batch`."""
        return self.defend_batch([checked_message(self, m) for m in messages], dataset)

    def _single_process_only(self) -> None:
        if self.sync.multi:
            raise RuntimeError(
                f"{self.name}: under torchrun the ranks share one EchoSafe stream, which only the launcher's step "
                "loop drives (torchrun … run.py / vlmeval-echosafe); this caller answers items one rank at a time"
            )

    def defend_batch(self, messages: list[list[dict[str, str]]], dataset: str | None) -> list[str]:
        """One micro-batch (under torchrun: this rank's part of one global step; every rank sees the whole step in
        stream order, answers its own items of it, and stores every item's outcome)."""
        dataset = dataset or "unknown"
        items = self._prepare(messages, dataset)
        if self.settings.staleness:  # one process only (refused under torchrun at construction)
            earlier, self._pending = self._pending, None
            try:
                answered = self._answer_all(items, dataset, earlier)
            except Exception as err:  # the earlier batch's answers are in the host's hands: record its loss
                if earlier is not None:
                    self._fail_reflections(earlier.items, f"pipelined reflection failed: {type(err).__name__}: {err}")
                    self._commit(earlier.items, earlier.dataset)
                raise
            self._pending = _Pending(items, answered, dataset)
            if earlier is not None:
                self._commit(earlier.items, earlier.dataset)
            return [item.answer for item in items]
        mine = [items[i] for i in self.sync.owned(len(items))]
        outcomes = self.sync.exchange(lambda: self._respond(mine, dataset))
        for item, outcome in zip(items, outcomes, strict=True):
            for name, value in outcome.items():
                setattr(item, name, value)
        self._commit(items, dataset)
        return [item.answer for item in mine]

    def flush(self) -> None:
        """Reflect on and store the micro-batch still pending (``staleness: 1``), on its own; otherwise nothing.
        The batched runners call it at the end of every dataset."""
        earlier, self._pending = self._pending, None
        if earlier is not None:
            self._reflect_all(earlier.items, earlier.answered, earlier.dataset)
            self._commit(earlier.items, earlier.dataset)

    def _prepare(self, messages: list[list[dict[str, str]]], dataset: str) -> list[_Item]:
        """Embed the batch (every rank its own items, exchanged into the step) and retrieve for each item from the
        bank as it stands."""
        return [self._retrieve(e, dataset) for e in self.sync.exchange(lambda: self._embed(messages, dataset))]

    def _embed(self, messages: list[list[dict[str, str]]], dataset: str) -> list[_Embedded]:
        """Keys and dataset rows of this rank's items (the texts one at a time, the images in one vision pass)."""
        if not messages:
            return []
        parts = [split_message(message) for message in messages]
        t = time.perf_counter()
        keys = self.keys.keys(parts) if self.keys else [None] * len(parts)
        share = (time.perf_counter() - t) / len(parts)
        return [
            _Embedded(images, question, self.row_for(dataset, images, question), key, share)
            for (images, question), key in zip(parts, keys, strict=True)
        ]

    def _respond(self, items: list[_Item], dataset: str) -> list[dict[str, Any]]:
        """Answer this rank's items and reflect on them (or keep the exchange); what the other ranks need."""
        if items:
            answered = self._answer_all(items, dataset)
            if self.settings.reflects:
                self._reflect_all(items, answered, dataset)
            elif self.settings.store == "exchange":
                self._exchange_all(items)
        return [{name: getattr(item, name) for name in _OUTCOME} for item in items]

    def _commit(self, items: list[_Item], dataset: str) -> None:
        """Store the batch's insights in stream order, save each touched bank once, write the trace lines."""
        touched: dict[str, _Stream] = {}
        for item in items:
            self._store(item, dataset)
            if item.stream is not None:
                touched[item.stream.id] = item.stream
        if not self.sync.persists or not items:  # under torchrun one rank saves the bank and writes the trace
            return
        t = time.perf_counter()
        for stream in touched.values():
            if stream.path is not None:
                stream.bank.save(stream.path)
        save_share = (time.perf_counter() - t) / len(items)
        for position, item in enumerate(items):
            if item.written is not None:
                item.times["store"] += save_share
            self._write_trace(item, dataset, len(items), position)

    def _retrieve(self, e: _Embedded, dataset: str) -> _Item:
        s = self.settings
        row, key = e.row, e.key
        item = _Item(e.images, e.question, row, key, times={"embed": e.embed_s, "retrieve": 0.0})
        if not s.uses_memory:
            self.trace_for(dataset, "echosafe", write=self.sync.persists)
            return item
        item.stream = self._stream(dataset, row, key.shape[0])
        item.bank_size = len(item.stream.bank)
        t = time.perf_counter()
        # Twin guard: every entry written by an item of the same pair (either twin, either image mode), found
        # through the bank's meta index rather than a scan.
        pair = row.get("pair_id") if s.twin_guard else None
        bank = item.stream.bank
        exclude = bank.ids_where({"dataset": dataset, "pair_id": pair}) if pair is not None else set()
        if s.retrieval == "random":
            item.hits = bank.random(s.k, self._rng, key, exclude_ids=exclude)
        else:
            item.hits = bank.search(key, s.k, exclude_ids=exclude)
        item.times["retrieve"] = time.perf_counter() - t
        return item

    def _answer_all(self, items: list[_Item], dataset: str, earlier: _Pending | None = None) -> Answered:
        """Answers every item; keeps what the reflection continues when there is one. With ``earlier``, the
        earlier batch's reflections decode in the same step (their time is inside this batch's answer time)."""
        turns = [self.answer_message(i.images, i.question, [h.insight for h in i.hits]) for i in items]
        t = time.perf_counter()
        if earlier is None:
            answered = self.model.answer(turns, dataset, keep=self.settings.reflects)
        else:
            answered, replies = self.model.answer_and_follow_up(
                turns, dataset, earlier.answered, earlier.dataset, prompts.REFLECT_TEMPLATE, self._form()
            )
        share = (time.perf_counter() - t) / len(items)
        for item, answer in zip(items, answered.answers, strict=True):
            item.answer, item.times["answer"] = answer, share
        if earlier is not None:
            self._take_reflections(earlier.items, replies, 0.0)
        return answered

    def _form(self) -> Constraint:
        cap = self.settings.reflect_tokens
        return Constraint(
            prompts.form_grammar(),
            line_tokens=cap,
            max_new_tokens=prompts.form_budget(cap),
            json_schema=prompts.form_schema(),
        )

    def _reflect_all(self, items: list[_Item], answered: Answered, dataset: str) -> None:
        """One reflection turn per item, continuing its answer's conversation (one call per micro-batch on the
        plugin's backend)."""
        t = time.perf_counter()
        replies = self.model.follow_up(answered, prompts.REFLECT_TEMPLATE, dataset, self._form())
        self._take_reflections(items, replies, (time.perf_counter() - t) / len(items))

    def _take_reflections(self, items: list[_Item], replies: list[Reply], share: float) -> None:
        """Each item's reflection, parsed and validated strictly. A failed answer is not reflected on."""
        for item, reply in zip(items, replies, strict=True):
            item.times["reflect"] = share
            failure = answer_failure(item.answer)
            if failure:
                item.reason, item.code = f"answer failed ({failure}): nothing to reflect on", "answer_failed"
            elif reply.text is None:
                item.reason, item.code = reply.error, "reflect_failed"
            else:
                self._validate(item, reply.text)

    @staticmethod
    def _fail_reflections(items: list[_Item], reason: str) -> None:
        for item in items:
            failure = answer_failure(item.answer)
            if failure:
                item.reason, item.code = f"answer failed ({failure}): nothing to reflect on", "answer_failed"
            else:
                item.reason, item.code = reason, "reflect_failed"

    @staticmethod
    def _validate(item: _Item, raw: str) -> None:
        try:
            parsed = parse_reflection(raw)
            item.decision = parsed["decision"]
            item.insight = validate_insight(parsed, item.question, item.answer)
        except InsightError as err:
            item.reason, item.code = str(err), err.code

    def _exchange_all(self, items: list[_Item]) -> None:
        """The NoReflection ablation: the raw exchange, length-capped, in place of an insight."""
        for item in items:
            failure = answer_failure(item.answer)
            if failure:
                item.reason, item.code = f"answer failed ({failure}): nothing to store", "answer_failed"
            else:
                item.insight = {
                    "kind": "exchange",
                    "question": item.question[:EXCHANGE_CHARS],
                    "answer": item.answer[:EXCHANGE_CHARS],
                }

    def _store(self, item: _Item, dataset: str) -> None:
        stream = item.stream
        if stream is None:  # no memory
            item.reason, item.code = "memory off (retrieval: none)", "memory_off"
            return
        item.stream_pos = stream.pos
        stream.pos += 1
        if not self.settings.writes:
            item.reason, item.code = "read-only memory (store: none)", "read_only"
            return
        if item.insight is None:
            return
        t = time.perf_counter()
        meta = {
            "stream": stream.id,
            "dataset": dataset,
            "row_index": item.row.get("index"),
            "pair_id": item.row.get("pair_id"),
            "category": item.row.get("category"),
            "stream_pos": item.stream_pos,
        }
        item.written = stream.bank.add(item.key, item.insight, meta)
        item.times["store"] = time.perf_counter() - t

    def _write_trace(
        self, item: _Item, dataset: str, batch_size: int, position: int, stream: str | None = None
    ) -> None:
        row = item.row
        self._traces[dataset].write(
            {
                "row_index": row.get("index"),
                "pair_id": row.get("pair_id"),
                "category": row.get("category"),
                "mode": row.get("mode"),
                "label": row.get("label"),
                "row_metadata": self.run_for(dataset).row_metadata,
                "stream": item.stream.id if item.stream else stream,
                "stream_pos": item.stream_pos,
                "bank_size": item.bank_size,
                "retrieved": [
                    {"id": h.id, "similarity": round(h.similarity, 6), "pair_id": h.meta.get("pair_id")}
                    for h in item.hits
                ],
                "insight_id": item.written,
                "insight_decision": item.decision,
                "not_written": item.reason,
                "not_written_code": item.code,
                "reflection": self._config["reflection"],
                "batch": {"size": batch_size, "position": position} if batch_size else None,
                "staleness": self.settings.staleness,
                # embed / answer / reflect (and the bank save in store) run once per batch: each item gets an
                # equal share
                "timings": {k: round(v, 6) for k, v in item.times.items()},
            }
        )

    def answer_message(self, images: list[str], question: str, insights: list[dict]) -> list[dict[str, str]]:
        """The answer turn: retrieved memory (if any), the safety instruction (unless ablated), the request."""
        block = ""
        if insights:
            lines = "\n".join(f"- {format_insight(i)}" for i in insights)
            block = f"{prompts.INSIGHTS_HEADER}\n{lines}\n\n"
        template = prompts.SAFETY_INSTRUCTION if self.settings.safety_instruction else prompts.NO_INSTRUCTION
        text = block + template.format(question=question)
        return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write a small JSON file atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, path)
