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
from .inner import Answered, adapt, adapter_class
from .insight import InsightError, format_insight, parse_reflection, validate_insight
from .rows import DatasetRun, ResumeUnknownError

log = logging.getLogger(__name__)

RESETS = ("dataset", "category", "never")
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


def check_resume(bank_path: Path, config: dict[str, Any]) -> None:
    """Refuse to continue a bank built with other settings (raises ResumeMismatchError naming the keys)."""
    saved_path = bank_path / RUN_CONFIG
    if not saved_path.exists():
        raise ResumeMismatchError(
            f"{bank_path}: this bank records no settings, so resuming it could mix two configurations; "
            "delete the folder (and the run's predictions) to start over, or use another --work-dir"
        )
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    diff = differing_keys(saved, config)
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
    reflection = adapter_class(getattr(inner, "func", inner)).describe()
    config = run_config(settings, reflection, stream_order.requested().as_dict())
    banks = Path(kw["run_dir"]) / "echosafe_bank"
    if not settings.writes or not banks.is_dir():
        return
    for saved in sorted(banks.rglob(RUN_CONFIG)):
        namespace = saved.parent.relative_to(banks).parts
        if resuming and namespace[0] in (dataset, "all"):
            check_resume(saved.parent, config)


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
    bank_size: int = 0
    hits: list = field(default_factory=list)
    answer: str = ""
    insight: dict | None = None
    decision: str | None = None  # the reflection's decision, also when the insight was rejected
    reason: str | None = None
    code: str | None = None
    written: int | None = None
    stream_pos: int = 0


class EchoSafe(Defense):
    """EchoSafe around any VLMEvalKit model; settings as keyword arguments (see EchoSafeSettings)."""

    def __init__(
        self,
        inner: Any,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_multi_rank()
        super().__init__(inner, name=name, run_dir=run_dir, **kwargs)
        self.settings = EchoSafeSettings(**(settings or {}))
        self.model = adapt(self.inner)
        self.keys = KeyEncoder(self.settings.encoders, inner=self.inner) if self.settings.uses_memory else None
        self.encoder_ids = self.keys.ids if self.keys else {}
        self._rng = np.random.default_rng(self.settings.seed)
        self._streams: dict[str, _Stream] = {}
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
        trace = self.trace_for(dataset, "echosafe")
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
            if dropped:
                log.warning(
                    "%s: dropped %d insights of rows the host will run again (%d rows finished, per %s)",
                    path,
                    dropped,
                    len(done or ()),
                    ", ".join(run.checkpoint) or "no checkpoint file",
                )
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

    # ---- the loop ----------------------------------------------------------------------------------------
    # One item is a micro-batch of one. A batch of B items retrieves from the bank as it stood before the batch,
    # answers and reflects as one batch on the inner model, then writes the B insights in stream order; B = 1
    # is the sequential algorithm, through the same code.

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
        it after a dataset's last item; a run killed before it leaves snapshot + log, which loads as well."""
        for stream in self._streams.values():
            if stream.path is not None:
                stream.bank.compact(stream.path)

    @property
    def supports_batch(self) -> bool:
        """Whether the inner model decodes several rows at once (the plugin's transformers backend does)."""
        return self.model.batched

    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        return self.defend_batch([message], dataset)[0]

    def generate_batch(self, messages: list[list[dict[str, str]]], dataset: str | None = None) -> list[str]:
        """Several items, in stream order, as one micro-batch (the host's checks applied to each message)."""
        return self.defend_batch([checked_message(self, m) for m in messages], dataset)

    def defend_batch(self, messages: list[list[dict[str, str]]], dataset: str | None) -> list[str]:
        dataset = dataset or "unknown"
        parts = [split_message(message) for message in messages]
        t = time.perf_counter()
        keys = self.keys.keys(parts) if self.keys else [None] * len(parts)
        embed_share = (time.perf_counter() - t) / len(parts)
        items = [
            self._retrieve(images, question, key, embed_share, dataset)
            for (images, question), key in zip(parts, keys, strict=True)
        ]
        answered = self._answer_all(items, dataset)
        if self.settings.reflects:
            self._reflect_all(items, answered, dataset)
        elif self.settings.store == "exchange":
            self._exchange_all(items)
        touched: dict[str, _Stream] = {}
        for item in items:
            self._store(item, dataset)
            if item.stream is not None:
                touched[item.stream.id] = item.stream
        t = time.perf_counter()
        for stream in touched.values():
            if stream.path is not None:
                stream.bank.save(stream.path)
        save_share = (time.perf_counter() - t) / len(items)
        for position, item in enumerate(items):
            if item.written is not None:
                item.times["store"] += save_share
            self._write_trace(item, dataset, len(items), position)
        return [item.answer for item in items]

    def _retrieve(self, images: list[str], question: str, key: Any, embed_s: float, dataset: str) -> _Item:
        s = self.settings
        row = self.row_for(dataset, images, question)
        item = _Item(images, question, row, key, times={"embed": embed_s, "retrieve": 0.0})
        if not s.uses_memory:
            self.trace_for(dataset, "echosafe")
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

    def _answer_all(self, items: list[_Item], dataset: str) -> Answered:
        """Answers every item; keeps what the reflection continues when there is one."""
        turns = [self.answer_message(i.images, i.question, [h.insight for h in i.hits]) for i in items]
        t = time.perf_counter()
        answered = self.model.answer(turns, dataset, keep=self.settings.reflects)
        share = (time.perf_counter() - t) / len(items)
        for item, answer in zip(items, answered.answers, strict=True):
            item.answer, item.times["answer"] = answer, share
        return answered

    def _reflect_all(self, items: list[_Item], answered: Answered, dataset: str) -> None:
        """One reflection turn per item, continuing its answer's conversation (one call per micro-batch on the
        plugin's backend); the form is parsed and validated strictly. A failed answer is not reflected on."""
        cap = self.settings.reflect_tokens
        form = Constraint(prompts.form_grammar(), line_tokens=cap, max_new_tokens=prompts.form_budget(cap))
        t = time.perf_counter()
        replies = self.model.follow_up(answered, prompts.REFLECT_TEMPLATE, dataset, form)
        share = (time.perf_counter() - t) / len(items)
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

    def _write_trace(self, item: _Item, dataset: str, batch_size: int, position: int) -> None:
        row = item.row
        self._traces[dataset].write(
            {
                "row_index": row.get("index"),
                "pair_id": row.get("pair_id"),
                "category": row.get("category"),
                "mode": row.get("mode"),
                "label": row.get("label"),
                "row_metadata": self.run_for(dataset).row_metadata,
                "stream": item.stream.id if item.stream else None,
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
                "batch": {"size": batch_size, "position": position},
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


def _refuse_multi_rank() -> None:
    """Each torchrun rank would grow its own bank and see a different stream: refuse until a shared bank exists."""
    try:
        import torch.distributed as dist

        multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    except Exception:  # torch without distributed support
        multi = False
    if multi:
        raise RuntimeError("EchoSafe keeps one memory stream; run it with one process (python run.py, not torchrun)")
