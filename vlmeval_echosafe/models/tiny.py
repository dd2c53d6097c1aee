"""Tiny random-weight VLMs built locally, for tests and smoke runs without any downloadable weights.

No VLM weights can be fetched on the machines this plugin is tested on, so the image-side code runs against
models built here: the real Hugging Face architectures of every family the backend runs (Qwen2-VL, Qwen2.5-VL,
Qwen3-VL, LLaVA-1.5, LLaVA-NeXT, InternVL3.5 in HF format) with their stock processors, tokenizers trained on a
fixed corpus (byte-level BPE for the Qwen family, Llama-style SentencePiece BPE with byte fallback for LLaVA as
the real checkpoints ship, plus a byte-level BPE LLaVA), and seeded random weights (std 0.15, so attention is
far from uniform and position bugs show). Their output is gibberish; tests must assert mechanics, never content.
Each build is deterministic (byte-identical safetensors) and takes well under a second after the first import.
"""

from collections.abc import Callable
from functools import partial
from pathlib import Path

from .tiny_build import _build_atomically
from .tiny_families import _write_tiny_internvl, _write_tiny_llava, _write_tiny_llava_next, _write_tiny_qwen

# Bump a folder's version when what its builder writes changes meaning, so old caches are not reused.
TINY_BUILDS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "qwen2vl": ("tiny-qwen2vl-v1", partial(_write_tiny_qwen, family="qwen2vl"), "Qwen2-VL"),
    "qwen25vl": ("tiny-qwen25vl-v1", partial(_write_tiny_qwen, family="qwen25vl"), "Qwen2.5-VL"),
    "qwen3vl": ("tiny-qwen3vl-v1", partial(_write_tiny_qwen, family="qwen3vl"), "Qwen3-VL"),
    "llava": ("tiny-llava-v1", _write_tiny_llava, "LLaVA-1.5, byte-level BPE tokenizer"),
    "llava_sp": ("tiny-llava-sp-v1", partial(_write_tiny_llava, tokenizer="sp"), "LLaVA-1.5, Llama SentencePiece"),
    "llava_next": ("tiny-llava-next-v1", _write_tiny_llava_next, "LLaVA-NeXT (any resolution), Llama SentencePiece"),
    "internvl": ("tiny-internvl-v1", _write_tiny_internvl, "InternVL3.5 (HF format), Qwen3 language model"),
}


def build_tiny(kind: str, root: Path | None = None) -> Path:
    """Build (once) the tiny random-weight model ``kind`` (a key of `TINY_BUILDS`) with its processor; return its
    folder (``root``, default the cache)."""
    if kind not in TINY_BUILDS:
        raise ValueError(f"vlmeval-echosafe: unknown tiny model {kind!r}; known: {sorted(TINY_BUILDS)}")
    folder, write, _ = TINY_BUILDS[kind]
    return _build_atomically(root, folder, write)


def build_tiny_qwen2vl(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight Qwen2-VL with its processor; return its folder."""
    return build_tiny("qwen2vl", root)


def build_tiny_llava(root: Path | None = None) -> Path:
    """Build (once) a tiny random-weight LLaVA (CLIP tower + Llama) with its processor; return its folder."""
    return build_tiny("llava", root)


TINY_BUILDERS: dict[str, Callable[[Path | None], Path]] = {kind: partial(build_tiny, kind) for kind in TINY_BUILDS}
