"""EchoSafe: a training-free defense with a memory of self-reflected safety insights.

Per item: embed (text ⊕ image) → retrieve the top-k insights → answer with them in the prompt, judging the
request's safety in context first → self-reflect with the same inner model into an abstract insight → store
(key, insight). The bank starts empty and grows with use; the host's checkpoint decides which rows are done, and
the bank is cut back to exactly those rows when a run resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import checked_message
from ..encoders import KeyEncoder
from ..memory import MemoryBank
from . import echosafe_prompts as prompts
from .base import Defense, split_message
from .insight import FIELDS, InsightError, format_insight, parse_reflection, validate_insight
from .rows import done_rows

RESETS = ("dataset", "category", "never")
ABLATIONS = ("none", "no_retrieval", "no_reflection", "random_memory", "frozen")
TWIN_KEYS = ("dataset", "pair_id")  # meta keys the bank indexes, so the twin guard needs no scan


@dataclass(frozen=True)
class EchoSafeSettings:
    """Every knob of the method; all of it is written to ``<name>_echosafe_config.json`` next to the results."""

    k: int = 5  # insights retrieved per item (not given in the paper)
    reset: str = "dataset"  # a separate bank per dataset, per dataset × category, or one for the whole run
    twin_guard: bool = True  # never retrieve an insight written by an item of the same pair
    ablation: str = "none"
    memory: str | None = None  # a saved bank to start from (required by `frozen`)
    encoders: dict[str, Any] = field(default_factory=lambda: {"text": "minilm", "image": "inner"})
    reflect_tokens: int = 48  # cap per reflection field
    seed: int = 0  # for `random_memory`

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"EchoSafe reset={self.reset!r}; expected one of {RESETS}")
        if self.ablation not in ABLATIONS:
            raise ValueError(f"EchoSafe ablation={self.ablation!r}; expected one of {ABLATIONS}")
        if self.k < 1:
            raise ValueError(f"EchoSafe k={self.k}; must be >= 1")
        if self.ablation == "frozen" and not self.memory:
            raise ValueError("EchoSafe ablation=frozen reads a saved bank: set memory: /path/to/bank")

    @property
    def writes(self) -> bool:
        return self.ablation not in ("no_reflection", "frozen")


@dataclass
class _Stream:
    """One bank and its position in the item stream."""

    id: str
    bank: MemoryBank
    path: Path | None  # None: never saved (frozen)
    pos: int = 0


@dataclass
class _Item:
    """One item on its way through a micro-batch."""

    images: list[str]
    question: str
    row: dict[str, Any]
    key: np.ndarray
    times: dict[str, float]
    stream: _Stream = None  # type: ignore[assignment]
    bank_size: int = 0
    hits: list = field(default_factory=list)
    answer: str = ""
    insight: dict | None = None
    reason: str | None = None
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
        self.keys = KeyEncoder(self.settings.encoders, inner=self.inner)
        self.encoder_ids = self.keys.ids
        self._rng = np.random.default_rng(self.settings.seed)
        self._streams: dict[str, _Stream] = {}
        self._write_config()

    # ---- setup -------------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "name": self.name,
            "inner": self.inner_name,
            "settings": asdict(self.settings),
            "encoders": self.encoder_ids,
            "prompt_version": prompts.PROMPT_VERSION,
        }
        (self.run_dir / f"{self.name}_echosafe_config.json").write_text(json.dumps(record, indent=2))

    def _namespace(self, dataset: str, row: dict[str, Any]) -> str:
        if self.settings.reset == "never":
            return "all"
        if self.settings.reset == "category":
            return f"{dataset}/{row.get('category', 'unknown')}"
        return dataset

    def _stream(self, dataset: str, row: dict[str, Any], dim: int) -> _Stream:
        ns = self._namespace(dataset, row)
        if ns in self._streams:
            return self._streams[ns]
        s = self.settings
        stream_id = f"{self.name}::{ns}"
        path = None if s.ablation == "frozen" else self.run_dir / "echosafe_bank" / ns
        if path is not None and MemoryBank.exists(path):
            bank = MemoryBank.load(path, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
        elif s.memory:
            bank = MemoryBank.load(s.memory, encoders=self.encoder_ids, index_meta=TWIN_KEYS)
            # Warm-start entries are never this run's own, even when the saved bank came from the same wrapper.
            bank.update_meta(lambda m: {**m, "origin": "warm"})
        else:
            bank = MemoryBank(dim, self.encoder_ids, index_meta=TWIN_KEYS)
        done = done_rows(self.run_dir, self.name, dataset)
        trace = self.trace_for(dataset, "echosafe", done)
        if path is not None:
            # Resume: keep warm-start entries and entries of finished rows; drop what the host will redo.
            bank.truncate(
                lambda m: (
                    m.get("origin") == "warm"
                    or m.get("stream") != stream_id
                    or m.get("dataset") != dataset
                    or str(m.get("row_index")) in done
                )
            )
            bank.save(path)
        stream = self._streams[ns] = _Stream(stream_id, bank, path, trace.count(stream_id))
        return stream

    # ---- the loop ----------------------------------------------------------------------------------------
    # One item is a micro-batch of one. A batch of B items retrieves from the bank as it stood before the batch,
    # answers and reflects as one batch on the inner model, then writes the B insights in stream order; B = 1
    # is the sequential algorithm, through the same code.

    @property
    def supports_batch(self) -> bool:
        """Whether the inner model decodes several rows at once (the plugin's transformers backend does)."""
        return hasattr(self.inner, "start_batch")

    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        return self.defend_batch([message], dataset)[0]

    def generate_batch(self, messages: list[list[dict[str, str]]], dataset: str | None = None) -> list[str]:
        """Several items, in stream order, as one micro-batch (the host's checks applied to each message)."""
        return self.defend_batch([checked_message(self, m) for m in messages], dataset)

    def defend_batch(self, messages: list[list[dict[str, str]]], dataset: str | None) -> list[str]:
        dataset = dataset or "unknown"
        parts = [split_message(message) for message in messages]
        t = time.perf_counter()
        keys = self.keys.keys(parts)
        embed_share = (time.perf_counter() - t) / len(parts)
        items = [
            self._retrieve(images, question, key, embed_share, dataset)
            for (images, question), key in zip(parts, keys, strict=True)
        ]
        session = self._answer_all(items, dataset)
        if self.settings.writes:
            self._reflect_all(items, dataset, session)
        touched: dict[str, _Stream] = {}
        for item in items:
            self._store(item, dataset)
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

    def _retrieve(self, images: list[str], question: str, key: np.ndarray, embed_s: float, dataset: str) -> _Item:
        s = self.settings
        row = self.row_for(images, question)
        item = _Item(images, question, row, key, times={"embed": embed_s})
        item.stream = self._stream(dataset, row, key.shape[0])
        item.bank_size = len(item.stream.bank)

        t = time.perf_counter()
        # Twin guard: every entry written by an item of the same pair (either twin, either image mode), found
        # through the bank's meta index rather than a scan.
        pair = row.get("pair_id") if s.twin_guard else None
        bank = item.stream.bank
        exclude = bank.ids_where({"dataset": dataset, "pair_id": pair}) if pair is not None else set()
        if s.ablation == "no_retrieval":
            item.hits = []
        elif s.ablation == "random_memory":
            item.hits = bank.random(s.k, self._rng, key, exclude_ids=exclude)
        else:
            item.hits = bank.search(key, s.k, exclude_ids=exclude)
        item.times["retrieve"] = time.perf_counter() - t
        return item

    def _answer_all(self, items: list[_Item], dataset: str) -> Any:
        """Answers every item; returns the batch's session (KV cache) when a reflection will continue from it."""
        messages = [self._answer_message(i.images, i.question, [h.insight for h in i.hits]) for i in items]
        t = time.perf_counter()
        session = None
        if self.supports_batch:  # one batch; with a reflection to follow, its KV cache is kept
            turns = [[{"role": "user", "content": m}] for m in messages]
            if self.settings.writes:
                answers, session = self.inner.start_batch(turns)
            else:
                answers = self.inner.generate_batch_turns(turns)
        else:
            answers = [self.ask(m, dataset) for m in messages]
        share = (time.perf_counter() - t) / len(items)
        for item, answer in zip(items, answers, strict=True):
            item.answer, item.times["answer"] = answer, share
        return session

    def _reflect_all(self, items: list[_Item], dataset: str, session: Any) -> None:
        t = time.perf_counter()
        if session is not None:
            raws = self._reflect_in_session(session)
        else:
            raws = [self._reflect(i.images, i.question, i.answer, dataset) for i in items]
        for item, raw in zip(items, raws, strict=True):
            try:
                item.insight = validate_insight(parse_reflection(raw), item.question, item.answer)
            except InsightError as err:
                item.reason = str(err)
        share = (time.perf_counter() - t) / len(items)
        for item in items:
            item.times["reflect"] = share

    def _store(self, item: _Item, dataset: str) -> None:
        stream = item.stream
        item.stream_pos = stream.pos
        stream.pos += 1
        if not self.settings.writes:
            item.reason = "ablation: nothing written"
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
                "stream": item.stream.id,
                "stream_pos": item.stream_pos,
                "bank_size": item.bank_size,
                "retrieved": [
                    {"id": h.id, "similarity": round(h.similarity, 6), "pair_id": h.meta.get("pair_id")}
                    for h in item.hits
                ],
                "insight_id": item.written,
                "not_written": item.reason,
                "batch": {"size": batch_size, "position": position},
                # embed / answer / reflect (and the bank save in store) run once per batch: each item gets an
                # equal share
                "timings": {k: round(v, 6) for k, v in item.times.items()},
            }
        )

    @staticmethod
    def _answer_message(images: list[str], question: str, insights: list[dict]) -> list[dict[str, str]]:
        block = ""
        if insights:
            lines = "\n".join(f"- {format_insight(i)}" for i in insights)
            block = f"{prompts.INSIGHTS_HEADER}\n{lines}\n\n"
        text = prompts.ANSWER_TEMPLATE.format(insights=block, question=question)
        return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]

    def _reflect_in_session(self, session: Any) -> list[str]:
        """Reflection on the plugin's own backend: each row's conversation continues from the answer's KV cache
        (image, insights, question and answer are not prefilled again) and the form is filled field by field,
        greedily, each field capped at ``reflect_tokens``; the decision is the likelier of " safe" / " unsafe"."""
        inner = self.inner
        texts = [inner.next_turn_text(session, prompts.REFLECT_TEMPLATE, row) for row in range(len(session))]
        forms = [""] * len(session)
        for name in FIELDS:
            asks = [f"{text}{name}:" for text in texts]
            if name == "Decision":
                values = [v.strip() for v in inner.choose_next_batch(session, asks, [" safe", " unsafe"])]
                texts = [f"{ask} {value}\n" for ask, value in zip(asks, values, strict=True)]  # sent with the next
            else:
                values = inner.extend_batch(session, asks, max_new_tokens=self.settings.reflect_tokens)
                # a field cut by the token cap still ends its line
                texts = ["" if "\n" in reply else "\n" for reply in session.replies]
            forms = [f"{form}{name}: {value}\n" for form, value in zip(forms, values, strict=True)]
        return forms

    def _reflect(self, images: list[str], question: str, answer: str, dataset: str) -> str:
        """Reflection on any other model: the form is asked for in one reply (multi-turn chat when the model has
        it, else one message holding the request and the answer)."""
        request = [*(dict(type="image", value=p) for p in images), dict(type="text", value=question)]
        if hasattr(self.inner, "chat_inner"):
            turns = [
                {"role": "user", "content": request},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": prompts.REFLECT_TEMPLATE},
            ]
            return self.inner.chat(turns, dataset=dataset)
        composite = f"Request: {question}\n\nYour reply: {answer}\n\n{prompts.REFLECT_TEMPLATE}"
        return self.ask([*request[:-1], dict(type="text", value=composite)], dataset)


def _refuse_multi_rank() -> None:
    """Each torchrun rank would grow its own bank and see a different stream: refuse until a shared bank exists."""
    try:
        import torch.distributed as dist

        multi = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    except Exception:  # torch without distributed support
        multi = False
    if multi:
        raise RuntimeError("EchoSafe keeps one memory stream; run it with one process (python run.py, not torchrun)")
