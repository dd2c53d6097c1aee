"""The host's file names and which rows are done: the one place that reads what VLMEvalKit's `infer_data` reads.

``infer_data(model, model_name, work_dir, dataset, out_file)`` skips the rows held by exactly two files: the
``<work_dir>/<model>_<dataset>_PREV.pkl`` that ``infer_data_job`` writes from an earlier prediction file, and
``out_file``, this rank's checkpoint ``{rank}{world}_{dataset}.pkl``. Under torchrun, the ranks of a shared
stream (EchoSafe) hold whole global steps, and a resumed stream continues from what any of them finished.
"""

from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any


def checkpoint_files(work_dir: str | Path, model_name: str, dataset_name: str, out_file: str | Path) -> list[Path]:
    """The files whose keys ``infer_data(model, model_name, work_dir, dataset, out_file)`` skips, in the order it
    reads them (vlmeval/inference.py: ``prev_file``, then ``out_file``)."""
    return [Path(f"{work_dir}/{model_name}_{dataset_name}_PREV.pkl"), Path(out_file)]


def rank_checkpoint(work_dir: str | Path, dataset_name: str) -> Path:
    """The ``out_file`` ``infer_data_job`` passes this rank (its ``tmpl``), for checks made before the host runs."""
    from vlmeval.smp import get_rank_and_world_size

    rank, world = get_rank_and_world_size()
    return Path(osp.join(str(work_dir), f"{rank}{world}_{dataset_name}.pkl"))


def rank_checkpoints(work_dir: str | Path, dataset_name: str) -> list[Path]:
    """Every rank's ``out_file`` (``infer_data_job``'s ``tmpl`` for ranks 0 … W-1): the ranks of a shared stream
    all hold whole global steps, and a resumed stream continues from what any of them finished."""
    from vlmeval.smp import get_rank_and_world_size

    _, world = get_rank_and_world_size()
    return [Path(osp.join(str(work_dir), f"{r}{world}_{dataset_name}.pkl")) for r in range(world)]


def predictions(files: list[Path]) -> dict[Any, Any]:
    """The predictions held by the files that exist, later files winning (as ``infer_data`` reads them)."""
    from vlmeval.smp import load

    out: dict[Any, Any] = {}
    for f in files:
        if f.exists():
            out.update(load(str(f)))
    return out


def finished(files: list[Path]) -> frozenset[str]:
    """Row indices (as strings) held by the files that exist."""
    return frozenset(str(k) for k in predictions(files))


def done_rows(
    work_dir: str | Path, model_name: str, dataset_name: str, out_file: str | Path, shared: bool
) -> tuple[list[Path], frozenset[str]]:
    """(the files read, the row indices they hold): this rank's files, or with ``shared`` (ranks of one stream)
    the PREV file and every rank's checkpoint."""
    files = checkpoint_files(work_dir, model_name, dataset_name, out_file)
    if shared:
        files = [files[0], *rank_checkpoints(work_dir, dataset_name)]
    return files, finished(files)
