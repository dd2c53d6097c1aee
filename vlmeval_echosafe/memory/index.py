"""The faiss side of the memory bank: which index to build, and whether it lives on a GPU.

Small banks use an exact inner-product index (``IndexFlatIP``). Past a size threshold the bank switches once
to an inverted-file index (``IndexIVFFlat``, inner product, ``nlist ≈ 4·sqrt(n)``, trained on the vectors
present), built by :func:`new_approx_index`; later inserts are added to the trained index, never rebuilt
per insert.
GPU builds of faiss replace ``faiss-cpu`` under the same module name, so GPU support is detected at runtime;
both index kinds have GPU versions (``GpuIndexFlatIP``, ``GpuIndexIVFFlat``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import faiss
import numpy as np

INDEX_NAME = "IndexFlatIP"
APPROX_NAME = "IndexIVFFlat"
INDEX_NAMES = (INDEX_NAME, APPROX_NAME)
DEFAULT_NPROBE = 16
# k-means settings for the one-off training at the switch: a capped sample and few iterations keep the pause
# short (seconds at 50k x 768 on two cores) at a negligible cost in recall on clustered keys.
TRAIN_ITERATIONS = 10
TRAIN_POINTS_PER_LIST = 64
TRAIN_SEED = 1234


def new_index(dim: int) -> faiss.Index:
    """An empty exact inner-product index (cosine on L2-normalised keys)."""
    return faiss.IndexFlatIP(dim)


def nlist_for(n: int) -> int:
    """Number of inverted lists for ``n`` vectors: about 4·sqrt(n), at least 1 and at most n."""
    return max(1, min(n, round(4 * math.sqrt(n))))


def new_approx_index(vectors: np.ndarray, nprobe: int = DEFAULT_NPROBE) -> faiss.Index:
    """A CPU ``IndexIVFFlat`` (inner product) trained on and holding ``vectors`` (n, dim) float32 in order."""
    n, dim = vectors.shape
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = TRAIN_ITERATIONS
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    index.cp.seed = TRAIN_SEED
    index.cp.spherical = True  # unit-norm centroids: the right k-means for cosine
    index.cp.verbose = False
    index.train(vectors)
    index.add(vectors)
    index.nprobe = min(nprobe, nlist)
    return index


def index_name(index: faiss.Index) -> str:
    return APPROX_NAME if isinstance(index, faiss.IndexIVFFlat) else INDEX_NAME


def index_params(index: faiss.Index) -> dict:
    """What the manifest records about ``index`` (a CPU index) beyond its type."""
    if isinstance(index, faiss.IndexIVFFlat):
        return {"nlist": int(index.nlist), "nprobe": int(index.nprobe), "metric": "inner_product"}
    return {}


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Set ``nprobe`` on a CPU or GPU IVF index (a no-op for the exact index)."""
    if hasattr(index, "nprobe"):
        index.nprobe = min(nprobe, int(index.nlist))


def is_expected_index(index: faiss.Index, dim: int, name: str = INDEX_NAME) -> bool:
    """Whether a loaded index is the kind ``name`` (as recorded in the manifest), with dimension ``dim``."""
    if name == APPROX_NAME:
        return (
            isinstance(index, faiss.IndexIVFFlat)
            and index.is_trained
            and index.metric_type == faiss.METRIC_INNER_PRODUCT
            and index.d == dim
        )
    return isinstance(index, faiss.IndexFlatIP) and index.d == dim


def gpu_available() -> bool:
    """True when the installed faiss is a GPU build and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def resolve_gpu(use_gpu: bool | None) -> bool:
    """``None`` means auto; ``True`` without GPU support fails early rather than silently running on CPU."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise RuntimeError(
            "use_gpu=True but the installed faiss has no GPU support or sees no GPU "
            "(install a faiss GPU build, or pass use_gpu=None/False)"
        )
    return bool(use_gpu)


@lru_cache(maxsize=1)
def _gpu_resources() -> faiss.StandardGpuResources:
    """One resource object per process: each reserves GPU scratch memory, so banks share it."""
    return faiss.StandardGpuResources()


def to_device(index: faiss.Index, on_gpu: bool) -> faiss.Index:
    """``index`` moved to GPU 0 when ``on_gpu``, else unchanged."""
    return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index) if on_gpu else index


def to_cpu(index: faiss.Index, on_gpu: bool) -> faiss.Index:
    """A CPU copy of a GPU index (for writing and reconstructing); a CPU index is returned as is."""
    return faiss.index_gpu_to_cpu(index) if on_gpu else index
