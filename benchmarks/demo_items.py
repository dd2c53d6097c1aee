"""What the model benches share: the plugin registered, one inner model, and the demo split's first prompts."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def inner_and_items(inner_name: str, items: int, **model_kwargs: Any) -> tuple[Any, Any, list]:
    """(inner model, demo dataset, the first ``items`` prompts as the host builds them); ``model_kwargs`` change
    the registered model's settings (e.g. ``max_new_tokens``)."""
    os.environ.setdefault("VLMEVALKIT_USE_MODELSCOPE", "0")
    os.environ.setdefault("LMUData", tempfile.mkdtemp())
    from vlmeval.config import supported_VLM
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe import register

    register()
    inner = supported_VLM[inner_name](**model_kwargs)
    dataset = build_dataset("MMSafetyBenchPP_Demo")
    prompts = [dataset.build_prompt(dataset.data.iloc[i]) for i in range(min(items, len(dataset.data)))]
    return inner, dataset, prompts


def hand_off(model: Any, dataset: Any) -> None:
    """What the launcher's runner does before a dataset's first item: the dataset's prompt rows (and its image
    dumper) to the model, for a defense that needs them."""
    from vlmeval_echosafe.datasets import order
    from vlmeval_echosafe.defenses.rows import DatasetRun

    model.set_dump_image(dataset.dump_image)
    if callable(getattr(model, "begin", None)):
        model.begin(DatasetRun(dataset.dataset_name, dataset.prompt_rows, order.of(dataset)))
