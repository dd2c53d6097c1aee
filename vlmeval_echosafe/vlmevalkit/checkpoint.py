"""The host's checkpoint files written atomically: a temporary file, fsync, rename.

VLMEvalKit's ``dump`` opens the target and writes into it, so a kill during the write leaves a torn pickle that
the next run cannot load (the combination then fails). :func:`atomic_dump` lets the host's own writer fill a
temporary file next to the target (same suffix, so the host picks the same format), fsyncs it, renames it over
the target and fsyncs the folder: a reader finds the previous file or the new one, never a torn one.
:func:`install` puts it in place of the ``dump`` that the host's inference loops call (``vlmeval.inference``,
and its multi-turn and video twins ``inference_mt`` and ``inference_video``: the per-rank checkpoint
``{rank}{world}_{dataset}.pkl``, ``_PREV.pkl`` and the prediction file; ``vlmeval.utils.mp_util`` and
``vlmeval.inference_api`` (``--api-mode``): the API runners' ``_checkpoint.pkl``).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..memory.persist import fsync_path

Writer = Callable[..., Any]


def _host_dump() -> Writer:
    from vlmeval.smp import dump

    return dump


def atomic_dump(data: Any, f: str, write: Writer | None = None, **kwargs: Any) -> None:
    """``write(data, f, **kwargs)`` (default: the host's ``dump``) made atomic and durable."""
    write = write or _host_dump()
    target = Path(f)
    stem, dot, suffix = target.name.rpartition(".")
    if not dot:
        raise ValueError(f"{f}: the host's dump needs a file suffix to pick the format")
    tmp = target.with_name(f".{stem}.tmp{os.getpid()}-{threading.get_ident()}.{suffix}")
    for stale in target.parent.glob(f".{stem}.tmp*.{suffix}"):  # left by a killed writer (the host serialises
        stale.unlink(missing_ok=True)  # its writers of one file, so none is live)
    try:
        write(data, str(tmp), **kwargs)
        if not tmp.exists():  # the host fell back to pickle after a failed write: keep its behaviour
            tmp, target = tmp.with_suffix(".pkl"), target.with_suffix(".pkl")
        fsync_path(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(target.parent)


def install(*modules: Any) -> None:
    """Make each module's ``dump`` atomic (in place, idempotent: the host's own is kept and wrapped once)."""
    for module in modules:
        host = getattr(module, "_echosafe_host_dump", module.dump)
        module._echosafe_host_dump = host
        module.dump = functools.partial(atomic_dump, write=host)
