"""The public Python API: any registered row as a defense in your own loop or service, no harness needed.

>>> from vlmeval_echosafe.api import Item, load_defense
>>> d = load_defense("EchoSafe_TinyQwen2VL", work_dir="out/lib")           # any row name; overrides as kwargs
>>> outs = d.respond([Item(question="...", images=["a.png"])])             # one micro-batch, in stream order
>>> outs[0].text                                                           # the answer; outs[0].record beside it
>>> d.close()

Rows whose inner model the plugin runs itself (``wrappers/models.yaml``) or that an endpoint serves
(``base_url=``) need neither VLMEvalKit nor lmms-eval. An inner model only VLMEvalKit knows needs VLMEvalKit
installed, and the error says so. Items of one call belong to one stream (``Item.dataset``; default ``api``);
the defense's lifecycle (:class:`~.core.defense.Defense`: begin / respond / flush / close) is the one every
harness adapter drives.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

from .catalog import Row, build_inner, defense_entries, inner_name, plugin_models, resolve
from .core.defense import Defense
from .core.inner import Inner, adapt
from .core.item import Item, Response
from .core.run import DatasetRun

__all__ = ["DatasetRun", "Defense", "Item", "Response", "load_defense", "load_inner", "row_names", "takes_settings"]


def row_names(served: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Every row name the plugin's YAML defines around its own inner models (and ``served`` ones)."""
    defenses, _ = defense_entries()
    inners = list(plugin_models(served))
    return [*inners, *(f"Base_{i}" for i in inners), *(f"{d}_{i}" for d in defenses for i in inners)]


def _served(name: str, base_url: str | None, key: str | None) -> dict[str, dict[str, Any]] | None:
    if base_url is None:
        return None
    inner = inner_name(name)
    return {inner: {"model": inner, "base_url": base_url, **({"key": key} if key else {})}}


def _inner_model(row: Row, model_overrides: dict[str, Any]) -> Any:
    """The built inner model of ``row``: a plugin model from its YAML entry, or (VLMEvalKit installed) a host model."""
    if row.inner_spec is not None:
        return build_inner(row.inner_spec, **model_overrides)
    try:
        from .vlmevalkit.registry import host_inner
    except ImportError as err:
        close = difflib.get_close_matches(row.name, row_names(), n=3)
        raise KeyError(
            f"{row.inner!r} (of row {row.name!r}) is not an inner model of the plugin (wrappers/models.yaml); a model "
            f"only VLMEvalKit knows needs VLMEvalKit installed (pip install ms-vlmeval==0.0.20) ({err})"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        ) from err
    return host_inner(row.inner, **model_overrides)


def load_inner(name: str, base_url: str | None = None, key: str | None = None, **model_overrides: Any) -> Inner:
    """An inner model by name, adapted to the inner-model protocol (``ask``, ``answer``, ``follow_up``)."""
    return adapt(_inner_model(resolve(name, _served(name, base_url, key)), model_overrides))


def takes_settings(cls: type[Defense]) -> bool:
    """Whether a defense class has settings (a model alone, ``Undefended``, has none)."""
    return "settings" in inspect.signature(cls.__init__).parameters


def load_defense(
    name: str,
    work_dir: str | Path = "outputs",
    base_url: str | None = None,
    key: str | None = None,
    model: dict[str, Any] | None = None,
    **overrides: Any,
) -> Defense:
    """The row ``name`` (``EchoSafe_TinyQwen2VL``, ``EchoSafe-k3_X``, ``ECSO_X``, ``Base_X``, ...) as a defense
    writing under ``<work_dir>/<name>``. ``overrides``: the defense's settings (e.g. ``k=3``); ``model``: the inner
    model's constructor arguments (e.g. ``{"device": "cuda"}``); ``base_url``/``key``: the inner model is served
    at that OpenAI-compatible endpoint under its name."""
    row = resolve(name, _served(name, base_url, key))
    if overrides and not takes_settings(row.defense):
        raise TypeError(f"{name}: {row.defense.__name__} has no settings; got {sorted(overrides)}")
    inner = _inner_model(row, dict(model or {}))
    extra = {"settings": {**row.settings, **overrides}} if takes_settings(row.defense) else {}
    return row.defense(inner, name=row.name, run_dir=Path(work_dir) / row.name, inner_name=row.inner, **extra)
