"""What the model benches share: the plugin registered, one inner model, and the demo split's first prompts."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def inner_and_items(inner_name: str, items: int, **model_kwargs: Any) -> tuple[Any, Any, list]:
    """(inner model, demo dataset, the first ``items`` prompts as the host builds them); ``model_kwargs`` change
    the registered model's settings (e.g. ``max_new_tokens``). The inner model is the one a defense wraps: the
    plugin's own backend for a `wrappers/models.yaml` name (its registered row is the plugin's model class around
    it), a host model wrapped by the VLMEvalKit adapter otherwise."""
    os.environ.setdefault("VLMEVALKIT_USE_MODELSCOPE", "0")
    os.environ.setdefault("LMUData", tempfile.mkdtemp())
    from vlmeval.config import supported_VLM
    from vlmeval.dataset import build_dataset

    from vlmeval_echosafe import register
    from vlmeval_echosafe.vlmevalkit.inner import HostInner
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    register()
    row = supported_VLM[inner_name](**model_kwargs)
    inner = row.defense.inner if isinstance(row, HostDefense) else HostInner(row)
    dataset = build_dataset("MMSafetyBenchPP_Demo")
    prompts = [dataset.build_prompt(dataset.data.iloc[i]) for i in range(min(items, len(dataset.data)))]
    return inner, dataset, prompts


def as_host_model(cls: type, inner: Any, **kwargs: Any) -> Any:
    """A defense class around ``inner`` as the host sees it (the plugin's one VLMEvalKit model class)."""
    from vlmeval_echosafe.vlmevalkit.model import HostDefense

    return HostDefense(cls(inner, **kwargs))


def base_model(inner: Any, name: str, run_dir: Any = None) -> Any:
    """The undefended inner model as the host sees it (the ``Base_`` row)."""
    from vlmeval_echosafe.defenses.undefended import Undefended

    return as_host_model(Undefended, inner, name=name, run_dir=run_dir or tempfile.mkdtemp())


def hand_off(model: Any, dataset: Any) -> None:
    """What the launcher's runner does before a dataset's first item: the run and the dataset's prompt rows (and
    its image dumper) to the model."""
    from vlmeval_echosafe.core.run import DatasetRun
    from vlmeval_echosafe.datasets import order

    model.set_dump_image(dataset.dump_image)
    model.begin(DatasetRun(dataset.dataset_name, dataset.prompt_rows.kind, order.of(dataset)), dataset.prompt_rows)
