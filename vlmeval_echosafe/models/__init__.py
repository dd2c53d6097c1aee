"""Inner-model backends and tiny random-weight test models.

Attributes are imported lazily: `TransformersVLM` pulls in transformers and torch, which a caller
that only wants `build_tiny_qwen2vl` should not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TransformersVLM", "build_tiny", "build_tiny_qwen2vl", "build_tiny_llava", "TINY_BUILDERS", "TINY_BUILDS"]

if TYPE_CHECKING:
    from .tiny import TINY_BUILDERS, TINY_BUILDS, build_tiny, build_tiny_llava, build_tiny_qwen2vl
    from .transformers_vlm import TransformersVLM


def __getattr__(name: str) -> Any:
    if name == "TransformersVLM":
        from .transformers_vlm import TransformersVLM

        return TransformersVLM
    if name in ("build_tiny", "build_tiny_qwen2vl", "build_tiny_llava", "TINY_BUILDERS", "TINY_BUILDS"):
        from . import tiny

        return getattr(tiny, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
