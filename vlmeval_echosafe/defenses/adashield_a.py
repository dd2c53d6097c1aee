"""AdaShield-A, the adaptive shield (Wang et al., "AdaShield: Safeguarding Multimodal Large Language Models from
Structure-based Attack via Adaptive Shield Prompting", ECCV 2024).

A pool of defense prompts, each keyed by the (image, query) it was found for; at test time the input's key
(L2-normalised concat of text and image embeddings — the project's encoders, not necessarily CLIP) is compared
with the pool and the best match's prompt is prepended when its cosine similarity exceeds ``beta``; otherwise the
query goes to the inner model unchanged. The pool is a :class:`MemoryBank` whose "insight" is
``{"prompt", "scenario"}``, built in memory at first use for the configured encoders.

The default pool is a small seed pool this project wrote (``data/adashield_seed_pool.yaml``: one shield per
MM-SafetyBench++ category), so retrieval runs offline; ``adashield_pool.py`` builds a real one with a defender LLM.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.defense import SingleItemDefense, image_message
from ..encoders import KeyEncoder
from ..memory import MemoryBank
from ..paths import PACKAGE_DIR, cache_root

SEED_POOL = PACKAGE_DIR / "data" / "adashield_seed_pool.yaml"


@dataclass(frozen=True)
class PoolEntry:
    id: str
    scenario: str
    prompt: str
    query: str
    image: str | None  # absolute path, or None for a text-only key


def render_phrase(phrase: str, size: int = 336) -> str:
    """The key phrase as black typography on white (MM-SafetyBench's typographic images), cached by content."""
    from PIL import Image, ImageDraw, ImageFont

    digest = hashlib.sha1(f"{phrase}|{size}".encode()).hexdigest()[:16]
    path = cache_root() / "adashield_images" / f"{digest}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=28)
        words, lines, line = phrase.split(), [], ""
        for w in words:  # greedy wrap
            trial = f"{line} {w}".strip()
            if draw.textlength(trial, font=font) > size - 20 and line:
                lines.append(line)
                line = w
            else:
                line = trial
        lines.append(line)
        draw.multiline_text((10, size // 3), "\n".join(lines), fill="black", font=font, spacing=8)
        tmp = path.with_suffix(".tmp.png")
        img.save(tmp)
        tmp.replace(path)
    return str(path)


def load_pool(path: str | Path) -> list[PoolEntry]:
    """Entries of a pool file (the seed pool's format; ``adashield_pool`` writes the same)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw = data.get("entries") if isinstance(data, dict) else None
    if not raw:
        raise ValueError(f"{path}: an AdaShield-A pool needs a non-empty `entries:` list")
    entries = []
    for i, e in enumerate(raw):
        missing = [k for k in ("prompt", "query") if not e.get(k)]
        if missing:
            raise ValueError(f"{path}: entry {i} lacks {missing}")
        image = e.get("image")
        if image:
            image = str((path.parent / image).resolve())
        elif e.get("key_phrase"):
            image = render_phrase(str(e["key_phrase"]))
        entries.append(
            PoolEntry(str(e.get("id", i)), str(e.get("scenario", "")), str(e["prompt"]), str(e["query"]), image)
        )
    return entries


def save_pool(entries: list[dict[str, Any]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump({"version": 1, "entries": entries}, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


@dataclass(frozen=True)
class AdaShieldASettings:
    beta: float = 0.5  # apply the best match's prompt only above this cosine similarity (not calibrated here)
    pool: str | None = None  # a pool file; None: the project's seed pool
    encoders: dict[str, Any] = field(default_factory=lambda: {"text": "minilm", "image": "inner"})
    separator: str = "\n"


class AdaShieldA(SingleItemDefense):
    """AdaShield-A retrieval over a prompt pool (Wang et al., ECCV 2024)."""

    SETTINGS = AdaShieldASettings

    def __init__(
        self,
        inner: Any,
        name: str | None = None,
        run_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        inner_name: str | None = None,
    ) -> None:
        super().__init__(inner, name=name, run_dir=run_dir, settings=settings, inner_name=inner_name)
        self.keys = KeyEncoder(self.settings.encoders, inner=self.inner)
        self.encoder_ids = self.keys.ids
        self._pool: MemoryBank | None = None

    def embed(self, images: list[str], question: str) -> np.ndarray:
        return self.keys.key(images, question)

    @property
    def pool(self) -> MemoryBank:
        if self._pool is None:
            entries = load_pool(self.settings.pool or SEED_POOL)
            bank = None
            for e in entries:
                key = self.embed([e.image] if e.image else [], e.query)
                bank = bank or MemoryBank(int(key.shape[0]), self.encoder_ids)
                bank.add(key, {"prompt": e.prompt, "scenario": e.scenario}, {"id": e.id})
            self._pool = bank
        return self._pool

    def answer_one(self, images: list[str], question: str, dataset: str) -> tuple[str, dict[str, Any]]:
        hits = self.pool.search(self.embed(images, question), 1)
        best = hits[0]
        applied = best.similarity > self.settings.beta
        text = f"{best.insight['prompt']}{self.settings.separator}{question}" if applied else question
        answer = self.ask(image_message(images, text), dataset)
        return answer, {
            "match_id": best.meta["id"],
            "scenario": best.insight["scenario"],
            "similarity": round(best.similarity, 6),
            "beta": self.settings.beta,
            "applied": applied,
            "prompt": text,
        }
