"""The harness-free core: records, the defense lifecycle, the inner-model protocol and the one batch loop.

Nothing here imports a benchmark harness (``vlmeval`` or ``lmms_eval``; ``tests/test_layers.py`` enforces it):
the VLMEvalKit and lmms-eval adapters, the public API (:mod:`vlmeval_echosafe.api`) and any server are thin
callers of the same objects.
"""

from .defense import Defense, SingleItemDefense
from .item import Item, Response
from .run import DatasetRun, ResumeUnknownError, RowNotFoundError

__all__ = ["DatasetRun", "Defense", "Item", "Response", "ResumeUnknownError", "RowNotFoundError", "SingleItemDefense"]
