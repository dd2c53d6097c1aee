"""Results of the lmms-eval task in a work dir: ``<output_path>/mmsafetybenchpp/<dataset>_<judge>_score.csv``.

lmms-eval's task names its files without the model (one ``--output_path`` per run), so the task writes beside them
``<dataset>_lmms_model.json`` naming the model it evaluated (:func:`write_model_record`); the report shows such a
result as ``<model> (lmms-eval)``, a run of its own beside the same model's ``run.py`` result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TASK_FOLDER = "mmsafetybenchpp"  # the lmms-eval task's output folder under --output_path
HARNESS = "lmms-eval"


def model_record_path(folder: Path, dataset: str) -> Path:
    return folder / f"{dataset}_lmms_model.json"


def write_model_record(folder: Path, dataset: str, model: str | None, args: Any) -> None:
    """What lmms-eval evaluated: the plugin's registry name of the model, then ``--model`` / ``--model_args``."""
    record = {
        "model": model,
        "lmms_model": getattr(args, "model", None),
        "lmms_model_args": getattr(args, "model_args", None),
    }
    model_record_path(folder, dataset).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


def parse_lmms_name(path: Path, suffix: str, datasets: list[str]) -> tuple[str, str, str] | None:
    """``mmsafetybenchpp/<dataset>_<judge><suffix>`` -> (``<model> (lmms-eval)``, dataset, judge), or None."""
    if path.parent.name != TASK_FOLDER or not path.name.endswith(suffix):
        return None
    body = path.name[: -len(suffix)]
    for ds in datasets:  # longest names first, so ..._GenOCR wins over ..._Gen
        if body.startswith(f"{ds}_") and len(body) > len(ds) + 1:
            record = model_record_path(path.parent, ds)
            model = json.loads(record.read_text(encoding="utf-8")).get("model") if record.exists() else None
            return f"{model or 'unknown model'} ({HARNESS})", ds, body[len(ds) + 1 :]
    return None
