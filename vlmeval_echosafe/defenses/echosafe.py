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
    def defend(self, message: list[dict[str, str]], dataset: str | None) -> str:
        s = self.settings
        dataset = dataset or "unknown"
        images, question = split_message(message)
        row = self.row_for(images, question)
        times: dict[str, float] = {}

        t = time.perf_counter()
        key = self.keys.key(images, question)
        times["embed"] = time.perf_counter() - t
        stream = self._stream(dataset, row, key.shape[0])
        bank_before = len(stream.bank)

        t = time.perf_counter()
        # Twin guard: every entry written by an item of the same pair (either twin, either image mode), found
        # through the bank's meta index rather than a scan.
        pair = row.get("pair_id") if s.twin_guard else None
        exclude = stream.bank.ids_where({"dataset": dataset, "pair_id": pair}) if pair is not None else set()
        if s.ablation == "no_retrieval":
            hits = []
        elif s.ablation == "random_memory":
            hits = stream.bank.random(s.k, self._rng, key, exclude_ids=exclude)
        else:
            hits = stream.bank.search(key, s.k, exclude_ids=exclude)
        times["retrieve"] = time.perf_counter() - t

        t = time.perf_counter()
        answer_message = self._answer_message(images, question, [h.insight for h in hits])
        session = None
        if s.writes and hasattr(self.inner, "start"):  # keep the KV cache: the reflection continues from it
            answer, session = self.inner.start([{"role": "user", "content": answer_message}])
        else:
            answer = self.ask(answer_message, dataset)
        times["answer"] = time.perf_counter() - t

        written, reason = None, "ablation: nothing written" if not s.writes else None
        if s.writes:
            t = time.perf_counter()
            try:
                raw = (
                    self._reflect_in_session(session)
                    if session is not None
                    else self._reflect(images, question, answer, dataset)
                )
                insight = validate_insight(parse_reflection(raw), question, answer)
            except InsightError as err:
                insight, reason = None, str(err)
            times["reflect"] = time.perf_counter() - t
            if insight is not None:
                t = time.perf_counter()
                meta = {
                    "stream": stream.id,
                    "dataset": dataset,
                    "row_index": row.get("index"),
                    "pair_id": row.get("pair_id"),
                    "category": row.get("category"),
                    "stream_pos": stream.pos,
                }
                written = stream.bank.add(key, insight, meta)
                stream.bank.save(stream.path)
                times["store"] = time.perf_counter() - t

        self._traces[dataset].write(
            {
                "row_index": row.get("index"),
                "pair_id": row.get("pair_id"),
                "category": row.get("category"),
                "mode": row.get("mode"),
                "label": row.get("label"),
                "stream": stream.id,
                "stream_pos": stream.pos,
                "bank_size": bank_before,
                "retrieved": [
                    {"id": h.id, "similarity": round(h.similarity, 6), "pair_id": h.meta.get("pair_id")} for h in hits
                ],
                "insight_id": written,
                "not_written": reason,
                "timings": {k: round(v, 6) for k, v in times.items()},
            }
        )
        stream.pos += 1
        return answer

    @staticmethod
    def _answer_message(images: list[str], question: str, insights: list[dict]) -> list[dict[str, str]]:
        block = ""
        if insights:
            lines = "\n".join(f"- {format_insight(i)}" for i in insights)
            block = f"{prompts.INSIGHTS_HEADER}\n{lines}\n\n"
        text = prompts.ANSWER_TEMPLATE.format(insights=block, question=question)
        return [*(dict(type="image", value=p) for p in images), dict(type="text", value=text)]

    def _reflect_in_session(self, session: Any) -> str:
        """Reflection on the plugin's own backend: the same conversation continues from the answer's KV cache
        (image, insights, question and answer are not prefilled again) and the form is filled field by field,
        greedily, each field capped at ``reflect_tokens``; the decision is the likelier of " safe" / " unsafe"."""
        inner = self.inner
        text = inner.next_turn_text(session, prompts.REFLECT_TEMPLATE)
        form = ""
        for name in FIELDS:
            if name == "Decision":
                value = inner.choose_next(session, f"{text}{name}:", [" safe", " unsafe"]).strip()
                text = f"{text}{name}: {value}\n"  # sent with the next field's prefix
            else:
                value = inner.extend(session, f"{text}{name}:", max_new_tokens=self.settings.reflect_tokens)
                text = "" if "\n" in session.reply else "\n"  # a field cut by the token cap still ends its line
            form += f"{name}: {value}\n"
        return form

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
