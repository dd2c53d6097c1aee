"""EchoSafe's settings and a run's identity: what a bank was built with, checked before it is continued.

Every knob of the method is one frozen dataclass (written next to the results); the run identity (settings,
prompt version, how the reflection ran, stream order) is saved beside each bank and compared on resume, naming
each key that differs."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..defenses import echosafe_prompts as prompts
from ..judges.base import INFER_FAIL_MARKERS

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
        """Benchmark labels the method reads (oracle information, reported with every result): ``pair_id`` for the
        twin guard (it excludes the item's own pair from retrieval), ``category`` for ``reset: category``."""
        labels = ["pair_id"] if self.twin_guard and self.uses_memory else []
        return labels + (["category"] if self.reset == "category" else [])


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
        detail = ", ".join(f"{k}: {lookup(saved, k)!r} -> {lookup(config, k)!r}" for k in diff)
        raise ResumeMismatchError(
            f"{bank_path}: the run being resumed used other EchoSafe settings ({detail}); resume with the same "
            "settings, or start a new run in another --work-dir"
        )


def lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def answer_failure(answer: Any) -> str | None:
    """Why an answer is not one (empty, or the host's failure string), or None."""
    if not isinstance(answer, str) or not answer.strip():
        return "empty answer"
    if any(marker in answer for marker in INFER_FAIL_MARKERS):
        return "inference failed"
    return None


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write a small JSON file atomically (a reader never sees half of it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    os.replace(tmp, path)
