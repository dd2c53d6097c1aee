"""bench_overhead's model-independent split and token counts: the key encoder's text pass timed on its own, the
rest of EchoSafe's time per item that no model call explains, and the per-item counts the FLOPs model reads."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Any

MODEL_INDEPENDENT = ("key_text", "retrieve", "store", "bookkeeping")


def time_text_keys(
    models: dict[str, Any], echo: dict[str, str]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wrap each EchoSafe row's key encoder (its HostDefense's core defense) and keep, under the row's label, the
    wall time of every text-key request on the answer's path (``text_vectors``: the wait for prefetched keys, or
    the encoding itself) and of every MiniLM pass wherever it ran (``text.encode``, also on the prefetch thread)."""
    on_path: dict[str, list[float]] = defaultdict(list)
    computed: dict[str, list[float]] = defaultdict(list)
    for label in echo:
        encoder = getattr(models[label].defense, "keys", None)
        if encoder is None:
            continue
        encoder.text_vectors = _timed(encoder.text_vectors, on_path[label])
        encoder.text.encode = _timed(encoder.text.encode, computed[label])
    return on_path, computed


def _timed(call: Any, spent: list[float]) -> Any:
    def timed(items: list[str]) -> Any:
        t = time.perf_counter()
        try:
            return call(items)
        finally:
            spent.append(time.perf_counter() - t)

    return timed


def split(row: dict, text_key_s: float, n: int) -> dict[str, float]:
    """Mean seconds per item: the trace's parts, the embed part cut into the text key (MiniLM) and the image key
    (the inner model's vision pass, whose features the answer reuses), and ``bookkeeping``: the row's wall time
    that no part accounts for (prompt building, validation, trace lines, the runner)."""
    parts = dict(row["parts_mean_s"])
    parts["key_text"] = text_key_s / n
    parts["key_image"] = parts.pop("embed") - parts["key_text"]
    parts["bookkeeping"] = row["s_per_item_wall_mean"] - sum(parts.values())
    parts["model_independent"] = sum(parts[k] for k in MODEL_INDEPENDENT)
    return parts


def key_embedding_side_by_side(encoder: Any, texts: list[str], block: int, rounds: int = 3) -> dict[str, float]:
    """ms per text: sentence-transformers one text per pass (the encoder before packing) against the packed encoder,
    on the same texts in micro-batches of ``block``, interleaved so the machine's load hits both alike."""
    model = encoder._load()
    one, packed = [], []
    for _ in range(rounds):
        for start in range(0, len(texts), block):
            chunk = texts[start : start + block]
            t = time.perf_counter()
            model.encode(chunk, batch_size=1, convert_to_numpy=True, show_progress_bar=False)
            one.append((time.perf_counter() - t) / len(chunk))
            t = time.perf_counter()
            encoder.encode(chunk)
            packed.append((time.perf_counter() - t) / len(chunk))
    return {
        "one_text_per_pass_ms": 1000 * statistics.median(one),
        "packed_ms": 1000 * statistics.median(packed),
        "ratio": statistics.median(one) / statistics.median(packed),
    }


def token_counts(inner: Any, messages: list, encoder: Any) -> dict[str, float]:
    """Per-item counts the FLOPs model needs that the backend's counters do not split: the tiny model's image tokens
    per image, the question in the tiny tokenizer and in MiniLM's (an English WordPiece tokenizer), and the
    reflection turn's text in the tiny tokenizer."""
    from vlmeval_echosafe.defenses.echosafe_prompts import REFLECT_TEMPLATE

    questions = [next(x["value"] for x in reversed(m) if x["type"] == "text") for m in messages]
    images = [x["value"] for m in messages for x in m if x["type"] == "image"]
    tokenizer = inner.processor.tokenizer
    minilm = encoder._load().tokenizer
    feats = inner.image_features(images[:4]) if images else []
    return {
        "images_per_item": len(images) / len(messages),
        "tiny_vision_tokens_per_image": statistics.mean(f.reshape(-1, f.shape[-1]).shape[0] for f in feats)
        if feats
        else 0.0,
        "question_tiny_tokens": statistics.mean(len(tokenizer(q)["input_ids"]) for q in questions),
        "question_minilm_tokens": statistics.mean(len(minilm(q)["input_ids"]) for q in questions),
        "reflect_template_tiny_tokens": float(len(tokenizer(REFLECT_TEMPLATE)["input_ids"])),
    }
