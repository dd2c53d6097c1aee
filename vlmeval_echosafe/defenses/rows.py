"""From a message back to its dataset row, and which rows the host has already finished.

The host gives a model neither the row index nor the work dir. The row is found through the dataset object
(learned from ``set_dump_image``) by the (image path, question) pair; done rows are read from the host's own
checkpoint files, whose names follow ``vlmeval.inference.infer_data``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd


class RowLookup:
    """Maps (image path, question) to the row's metadata for one dataset object."""

    META = ("index", "pair_id", "category", "mode", "label")

    def __init__(self, dataset: Any) -> None:
        self.dataset_name = getattr(dataset, "dataset_name", None)
        self._by_key: dict[tuple[str, str], dict[str, Any]] = {}
        data: pd.DataFrame = getattr(dataset, "data", pd.DataFrame())
        meta_only = getattr(dataset, "meta_only", False)
        img_root = getattr(dataset, "img_root", "")
        for _, row in data.iterrows():
            if meta_only and "image_path" in row:
                paths = row["image_path"] if isinstance(row["image_path"], list) else [row["image_path"]]
            else:
                paths = [os.path.join(img_root, f"{row['index']}.png")]
            meta = {k: (str(row[k]) if k == "index" else row[k]) for k in self.META if k in row}
            for p in paths:
                self._by_key[(str(Path(p)), str(row.get("question", "")))] = meta

    def find(self, images: list[str], question: str) -> dict[str, Any]:
        for p in images:
            meta = self._by_key.get((str(Path(p)), question))
            if meta is not None:
                return dict(meta)
        # Host datasets dump images as <index>.png; fall back to the file stem.
        for p in images:
            for (path, _), meta in self._by_key.items():
                if Path(path).stem == Path(p).stem:
                    return dict(meta)
        return {}


def done_rows(run_dir: Path, model_name: str, dataset_name: str, all_ranks: bool = False) -> set[str]:
    """Indices the host will skip on this run: its PREV file and this rank's checkpoint (see infer_data), or with
    ``all_ranks`` every rank's checkpoint (a stream shared by the ranks is cut back to what all of them finished)."""
    return {str(k) for k in done_predictions(run_dir, model_name, dataset_name, all_ranks)}


def done_predictions(run_dir: Path, model_name: str, dataset_name: str, all_ranks: bool = False) -> dict[Any, Any]:
    """The predictions behind `done_rows`, by the host's own index values."""
    from vlmeval.smp import get_rank_and_world_size, load

    rank, world = get_rank_and_world_size()
    ranks = range(world) if all_ranks else [rank]
    done: dict[Any, Any] = {}
    for name in (f"{model_name}_{dataset_name}_PREV.pkl", *(f"{r}{world}_{dataset_name}.pkl" for r in ranks)):
        path = run_dir / name
        if path.exists():
            done.update(load(str(path)))
    return done
