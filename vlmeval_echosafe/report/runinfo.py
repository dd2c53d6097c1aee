"""Which run a result file belongs to: the stream order an EchoSafe run used and the benchmark labels it read (from
the ``<model>_echosafe_config.json`` the defense writes next to its results), and the batch size any plugin row
ran at (from its run identity)."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_SUFFIX = "_echosafe_config.json"


def config_for(result_file: Path, model: str) -> dict | None:
    """The EchoSafe config of the run a score/items/trace file belongs to (its folder, or the model folder above a
    VLMEvalKit ``T<date>`` copy), or None for a model that is not EchoSafe."""
    for folder in (result_file.parent, result_file.parent.parent):
        path = folder / f"{model}{CONFIG_SUFFIX}"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def order_label(config: dict | None, dataset: str) -> str:
    """``file``, ``shuffle:<seed>``, or ``""`` when unknown (not EchoSafe, or the stream never opened)."""
    if not config:
        return ""
    for stream in (config.get("streams") or {}).values():
        if stream.get("dataset") == dataset:
            order = stream.get("order") or {}
            return order.get("order", "") if order.get("seed") is None else f"{order['order']}:{order['seed']}"
    return ""


def labels_used(config: dict | None) -> str:
    """Benchmark labels the defense read (``pair_id`` for EchoSafe's twin guard, ``category`` for ``reset:
    category``), comma-separated; ``none`` for a defense that reads none (every baseline, EchoSafe-Paper)."""
    return ",".join((config or {}).get("labels_used") or []) or "none"


IDENTITY_SUFFIX = "_run_identity.json"  # written by the VLMEvalKit launcher beside a plugin row's predictions


def batch_size(result_file: Path, model: str, dataset: str) -> str:
    """The effective micro-batch size the row ran at (part of what it computes: it decides which insights an item
    can see), from its run identity; ``""`` when none was recorded (a host model, or an lmms-eval run)."""
    for folder in (result_file.parent, result_file.parent.parent):
        path = folder / f"{model}_{dataset}{IDENTITY_SUFFIX}"
        if path.is_file():
            return str(json.loads(path.read_text(encoding="utf-8")).get("batch_size", ""))
    return ""


def backend(config: dict | None) -> str:
    """How an EchoSafe run's reflection reached its inner model (``kv-session/constrained``, ``served-chat/free``,
    ...): rejections by reason differ by backend, so the memory table shows it; ``""`` for other rows."""
    reflection = (config or {}).get("reflection") or {}
    return "/".join(str(reflection[k]) for k in ("path", "decoding") if reflection.get(k)) if reflection else ""
