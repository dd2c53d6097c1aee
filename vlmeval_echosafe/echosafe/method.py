"""EchoSafe: a training-free defense with a memory of self-reflected safety insights.

Per item: embed (text + image) -> retrieve the top-k insights -> answer with them in the prompt, judging the
request's safety in context first -> self-reflect with the same inner model into an abstract insight -> store
(key, insight). The bank starts empty and grows with use. One item is a micro-batch of one: a batch of B items
retrieves from the bank as it stood before the batch, answers and reflects as one batch on the inner model, then
writes the B insights in stream order. The method is written once against the inner-model protocol
(:mod:`..core.inner`), so it is the same algorithm on every kind of inner model. Its settings and run identity
live in :mod:`.settings`, its banks in :mod:`.streams`, the ``staleness: 1`` pipeline in :mod:`.pipeline`, the
steps a server schedules itself (answer now, reflect later) in :mod:`.deferred`.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..core.defense import Defense
from ..core.inner import Answered, Reply
from ..core.item import Item, Response
from ..core.sync import StreamSync
from ..defenses import echosafe_prompts as prompts
from ..defenses.insight import InsightError, format_insight, parse_reflection, validate_insight
from ..encoders import KeyEncoder
from ..models.constrained import Constraint
from .deferred import EchoSafeDeferred
from .pipeline import EchoSafePipeline
from .records import OUTCOME, Embedded, Pending, Stream, StreamItem
from .settings import EXCHANGE_CHARS, EchoSafeSettings, answer_failure, write_json
from .streams import EchoSafeStreams

log = logging.getLogger(__name__)


class EchoSafe(EchoSafeStreams, EchoSafePipeline, EchoSafeDeferred, Defense):
    """EchoSafe around any inner model; settings as keyword arguments (see EchoSafeSettings)."""

    # Under torchrun the ranks share one stream: the VLMEvalKit adapter drives it in global steps.
    shares_stream = True

    def __init__(
        self,
        inner: Any,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        inner_name: str | None = None,
    ) -> None:
        super().__init__(inner, name=name, run_dir=run_dir, inner_name=inner_name)
        self.sync = StreamSync.from_process_group()
        self.settings = EchoSafeSettings(**(settings or {}))
        if self.settings.staleness and self.sync.multi:
            raise RuntimeError(
                f"{self.name}: staleness=1 is not supported under torchrun (each rank would hold its own pending "
                "micro-batch); use staleness 0, or one process"
            )
        self.keys = KeyEncoder(self.settings.encoders, inner=self.inner) if self.settings.uses_memory else None
        self.encoder_ids = self.keys.ids if self.keys else {}
        self._streams: dict[str, Stream] = {}
        self._pending: Pending | None = None  # staleness 1: the micro-batch whose reflections decode next
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
            write_json(self.run_dir / f"{self.name}_echosafe_config.json", self._config)

    @classmethod
    def planned_batched(cls, inner_batched: bool, settings: dict[str, Any]) -> bool:
        """The inner model decodes several rows at once (the plugin's backend, a served endpoint), or the stream
        is pipelined (``staleness: 1``)."""
        return inner_batched or int(settings.get("staleness", 0)) > 0

    def respond(self, items: list[Item]) -> list[Response]:
        """One micro-batch of one dataset. Under torchrun: this rank's part of one global step (every rank calls
        it once per step, also with no items; every rank sees the whole step in stream order, answers its own
        items of it, and stores every item's outcome)."""
        step = self._prepare(items)
        if not step:
            return []
        dataset = step[0].dataset
        if self.settings.staleness:  # one process only (refused under torchrun at construction)
            return self._respond_pipelined(step, dataset)
        mine = [step[i] for i in self.sync.owned(len(step))]
        outcomes = self.sync.exchange(lambda: self._respond(mine, dataset))
        for item, outcome in zip(step, outcomes, strict=True):
            for name, value in outcome.items():
                setattr(item, name, value)
        self._commit(step, dataset)
        return [self._response(item) for item in mine]

    def prefetch(self, items: list[Item]) -> None:
        """The next micro-batch's text keys, encoded while this one is answered (the same keys as on demand; in
        one process only: under torchrun each rank embeds its part of a step inside the step's exchange)."""
        if self.keys is not None and not self.sync.multi:
            self.keys.prefetch([item.question for item in items])

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
        super().close()

    @staticmethod
    def _response(item: StreamItem) -> Response:
        """What the caller gets beside the answer: the stream, what was retrieved, the bank before the item."""
        retrieved = [{"id": h.id, "similarity": round(h.similarity, 6)} for h in item.hits]
        return Response(
            item.answer,
            {"stream": item.stream.id if item.stream else None, "retrieved": retrieved, "bank_size": item.bank_size},
        )

    def _prepare(self, items: list[Item]) -> list[StreamItem]:
        """Embed the batch (every rank its own items, exchanged into the step) and retrieve for each item from the
        bank as it stands."""
        return [self._retrieve(e) for e in self.sync.exchange(lambda: self._embed(items))]

    def _embed(self, items: list[Item]) -> list[Embedded]:
        """Keys of this rank's items (the texts in one batch, the images in one vision pass)."""
        if not items:
            return []
        parts = [(item.paths, item.question) for item in items]
        t = time.perf_counter()
        keys = self.keys.keys(parts) if self.keys else [None] * len(parts)
        share = (time.perf_counter() - t) / len(parts)
        return [
            Embedded(images, question, item.row, key, share, item.dataset)
            for (images, question), key, item in zip(parts, keys, items, strict=True)
        ]

    def _respond(self, items: list[StreamItem], dataset: str) -> list[dict[str, Any]]:
        """Answer this rank's items and reflect on them (or keep the exchange); what the other ranks need."""
        if items:
            answered = self._answer_all(items, dataset)
            if self.settings.reflects:
                self._reflect_all(items, answered, dataset)
            elif self.settings.store == "exchange":
                self._exchange_all(items)
        return [{name: getattr(item, name) for name in OUTCOME} for item in items]

    def _commit(self, items: list[StreamItem], dataset: str) -> None:
        """Store the batch's insights in stream order, save each touched bank once, write the trace lines."""
        touched: dict[str, Stream] = {}
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

    def _retrieve(self, e: Embedded) -> StreamItem:
        s, dataset = self.settings, e.dataset
        row, key = e.row, e.key
        item = StreamItem(e.images, e.question, row, key, dataset, times={"embed": e.embed_s, "retrieve": 0.0})
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
        exclude |= self.withheld(dataset)  # insights an operator quarantined or deleted (deferred.py)
        if s.retrieval == "random":
            item.hits = bank.random(s.k, self._item_rng(item.stream.id, row, e.question), key, exclude_ids=exclude)
        else:
            item.hits = bank.search(key, s.k, exclude_ids=exclude)
        item.times["retrieve"] = time.perf_counter() - t
        return item

    def _answer_all(self, items: list[StreamItem], dataset: str, earlier: Pending | None = None) -> Answered:
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

    def _reflect_all(self, items: list[StreamItem], answered: Answered, dataset: str) -> None:
        """One reflection turn per item, continuing its answer's conversation (one call per micro-batch on the
        plugin's backend)."""
        t = time.perf_counter()
        replies = self.model.follow_up(answered, prompts.REFLECT_TEMPLATE, dataset, self._form())
        self._take_reflections(items, replies, (time.perf_counter() - t) / len(items))

    def _take_reflections(self, items: list[StreamItem], replies: list[Reply], share: float) -> None:
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
    def _fail_reflections(items: list[StreamItem], reason: str) -> None:
        for item in items:
            failure = answer_failure(item.answer)
            if failure:
                item.reason, item.code = f"answer failed ({failure}): nothing to reflect on", "answer_failed"
            else:
                item.reason, item.code = reason, "reflect_failed"

    @staticmethod
    def _validate(item: StreamItem, raw: str) -> None:
        try:
            parsed = parse_reflection(raw)
            item.decision = parsed["decision"]
            item.insight = validate_insight(parsed, item.question, item.answer)
        except InsightError as err:
            item.reason, item.code = str(err), err.code

    def _exchange_all(self, items: list[StreamItem]) -> None:
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

    def _store(self, item: StreamItem, dataset: str) -> None:
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
        self, item: StreamItem, dataset: str, batch_size: int, position: int, stream: str | None = None
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

    def _item_rng(self, stream: str, row: dict[str, Any], question: str) -> np.random.Generator:
        """The random draw of one item (``retrieval: random``), seeded by the setting and the item itself: no
        generator state runs through the stream, so a resumed run draws exactly what an uninterrupted one does."""
        item_seed = zlib.crc32(f"{stream}|{row.get('index')}|{question}".encode())
        return np.random.default_rng([self.settings.seed, item_seed])

    def answer_message(self, images: list[str], question: str, insights: list[dict]) -> list[dict[str, str]]:
        """The answer turn: retrieved memory (if any), the safety instruction (unless ablated), the request."""
        block = ""
        if insights:
            lines = "\n".join(f"- {format_insight(i)}" for i in insights)
            block = f"{prompts.INSIGHTS_HEADER}\n{lines}\n\n"
        template = prompts.SAFETY_INSTRUCTION if self.settings.safety_instruction else prompts.NO_INSTRUCTION
        text = block + template.format(question=question)
        return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]
