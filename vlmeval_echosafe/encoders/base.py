"""The one interface everything that embeds hangs on, and the key EchoSafe retrieves with.

EchoSafe's bank searches by inner product on unit vectors (cosine similarity), so every encoder returns
L2-normalised float32 rows, and the bank's manifest records `name` so a bank is never reused with other
encoders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit rows along the last axis as float32; an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class Encoder(ABC):
    """Embeds a batch of items (texts or image paths) into L2-normalised rows.

    Weights load on the first `encode`, so building an encoder (e.g. from a YAML spec) stays cheap.
    """

    name: str  # identity recorded in the bank manifest, e.g. "minilm:all-MiniLM-L6-v2"
    dim: int

    @abstractmethod
    def encode(self, items: list) -> np.ndarray:
        """Return an (n, dim) float32 array whose non-zero rows have unit L2 norm."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def contextual_key(text_vec: np.ndarray, image_vec: np.ndarray | None) -> np.ndarray:
    """EchoSafe's retrieval key: the unit-norm concatenation of the unit-norm text and image parts.

    Normalising each part first gives text and image equal weight whatever their dimensions, so the cosine
    of two keys is the mean of the text cosine and the image cosine. `image_vec=None` means a text-only key
    (shape (d_text,)); callers that mix items with and without images in one bank pass zeros of the image
    dimension instead, so that every key has the same length. Works on single vectors and on (n, d) batches.
    """
    parts = [l2_normalize(text_vec)]
    if image_vec is not None:
        parts.append(l2_normalize(image_vec))
    return l2_normalize(np.concatenate(parts, axis=-1))
