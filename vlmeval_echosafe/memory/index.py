"""The faiss side of the memory bank: which index to build, and whether it lives on a GPU.

Index construction is one function so a later approximate index (past a size threshold) changes one place.
GPU builds of faiss replace ``faiss-cpu`` under the same module name, so GPU support is detected at runtime.
"""

from __future__ import annotations

from functools import lru_cache

import faiss

INDEX_NAME = "IndexFlatIP"


def new_index(dim: int) -> faiss.Index:
    """An empty exact inner-product index (cosine on L2-normalised keys)."""
    return faiss.IndexFlatIP(dim)


def is_expected_index(index: faiss.Index, dim: int) -> bool:
    """Whether a loaded index is the kind :func:`new_index` builds, with dimension ``dim``."""
    return isinstance(index, faiss.IndexFlatIP) and index.d == dim


def gpu_available() -> bool:
    """True when the installed faiss is a GPU build and sees at least one GPU."""
    return (hasattr(faiss, "StandardGpuResources") and hasattr(faiss, "get_num_gpus")
            and faiss.get_num_gpus() > 0)


def resolve_gpu(use_gpu: bool | None) -> bool:
    """``None`` means auto; ``True`` without GPU support fails early rather than silently running on CPU."""
    if use_gpu is None:
        return gpu_available()
    if use_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but the installed faiss has no GPU support or sees no GPU "
                           "(install a faiss GPU build, or pass use_gpu=None/False)")
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
