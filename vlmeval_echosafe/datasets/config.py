"""Reads task_configs/mmsafetybenchpp.yaml: dataset variants and the release column mapping."""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Any

import yaml

from ..paths import config_file

CONFIG_FILE = "task_configs/mmsafetybenchpp.yaml"


@lru_cache(maxsize=1)
def load_config() -> dict[str, Any]:
    path = config_file(CONFIG_FILE)
    with path.open(encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict) or "variants" not in cfg or "release" not in cfg:
        raise ValueError(f"{path}: expected top-level keys 'variants' and 'release'")
    return cfg


def variant(name: str) -> dict[str, Any]:
    variants = load_config()["variants"]
    if name not in variants:
        close = difflib.get_close_matches(name, list(variants), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown MM-SafetyBench++ variant {name!r}{hint} (known: {', '.join(variants)})")
    return variants[name]
