"""Register the plugin into VLMEvalKit.

The host has no plugin hook: its registries are module-level objects that ``vlmeval.run`` imported by
reference, so they are mutated in place (never rebound) before ``vlmeval.run.main()`` runs.
"""

from __future__ import annotations

import difflib
from functools import partial
from typing import Any

import yaml

from .paths import config_root

MODEL_CLASSES = ("TransformersVLM",)


def _model_class(name: str) -> type:
    if name == "TransformersVLM":
        from .models.transformers_vlm import TransformersVLM

        return TransformersVLM
    close = difflib.get_close_matches(name, MODEL_CLASSES, n=3)
    raise KeyError(f"unknown model class {name!r} in wrappers/models.yaml" + (f"; did you mean {close}?" if close else ""))


def model_entries() -> dict[str, dict[str, Any]]:
    """The plugin's model names and constructor settings, read from ``wrappers/models.yaml``."""
    path = config_root() / "wrappers" / "models.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = data.get("models") or {}
    for name, spec in entries.items():
        if not isinstance(spec, dict) or "class" not in spec:
            raise ValueError(f"{path}: entry {name!r} needs a mapping with a 'class' key")
    return entries


def register() -> None:
    """Add the plugin's datasets and models to VLMEvalKit's registries; calling it twice changes nothing."""
    import vlmeval.config
    import vlmeval.dataset
    import vlmeval.vlm

    from .datasets.mmsafetybenchpp import MMSafetyBenchPP

    if MMSafetyBenchPP not in vlmeval.dataset.DATASET_CLASSES:
        vlmeval.dataset.DATASET_CLASSES.insert(0, MMSafetyBenchPP)
    for name in MMSafetyBenchPP.supported_datasets():
        if name not in vlmeval.dataset.SUPPORTED_DATASETS:
            vlmeval.dataset.SUPPORTED_DATASETS.append(name)
    setattr(vlmeval.dataset, MMSafetyBenchPP.__name__, MMSafetyBenchPP)

    for name, spec in model_entries().items():
        spec = dict(spec)
        cls = _model_class(spec.pop("class"))
        setattr(vlmeval.vlm, cls.__name__, cls)
        vlmeval.config.supported_VLM[name] = partial(cls, **spec)
