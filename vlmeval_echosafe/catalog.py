"""The plugin's rows, harness-free: inner models (``wrappers/models.yaml``) and defenses (``wrappers/defenses.yaml``).

A row name is ``<Defense>_<inner>`` (or ``Base_<inner>``, the undefended model). :func:`resolve` turns a name into
everything needed to build it; :func:`build_inner` builds a plugin inner model. The Python API and the harness
adapters (VLMEvalKit's registry, lmms-eval's models) all read the rows from here, so a new leaderboard row is a
YAML entry for all of them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml

from .paths import config_file


def _classes() -> dict[str, type]:
    from .defenses.adashield_a import AdaShieldA
    from .defenses.coca import CoCA
    from .defenses.ecso import ECSO
    from .defenses.eta import ETA
    from .defenses.guard_filter import GuardFilter
    from .defenses.prompts import AdaShieldS, FigStepPrompt, PromptDefense, SafetyPrompt
    from .defenses.undefended import Undefended
    from .echosafe import EchoSafe
    from .models.served import ServedVLM
    from .models.transformers_vlm import TransformersVLM

    return {
        "Undefended": Undefended,
        "TransformersVLM": TransformersVLM,
        "ServedVLM": ServedVLM,
        "EchoSafe": EchoSafe,
        "PromptDefense": PromptDefense,
        "SafetyPrompt": SafetyPrompt,
        "FigStepPrompt": FigStepPrompt,
        "AdaShieldS": AdaShieldS,
        "AdaShieldA": AdaShieldA,
        "ECSO": ECSO,
        "GuardFilter": GuardFilter,
        "CoCA": CoCA,
        "ETA": ETA,
    }


# `Base_<inner>` is the inner model itself, so leaderboards have an explicit base row.
BASE_PREFIX = "Base_"


def _accepted(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    accepts = getattr(cls, "accepts_setting", lambda _key: True)
    return {k: v for k, v in settings.items() if accepts(k)}


def _class(name: str, where: str) -> type:
    classes = _classes()
    if name not in classes:
        close = difflib.get_close_matches(name, list(classes), n=3)
        raise KeyError(f"unknown class {name!r} in {where}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    return classes[name]


def _yaml(name: str) -> dict[str, Any]:
    path = config_file(f"wrappers/{name}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def model_entries() -> dict[str, dict[str, Any]]:
    """The plugin's inner models and their constructor settings (``wrappers/models.yaml``)."""
    entries = _yaml("models.yaml").get("models") or {}
    for name, spec in entries.items():
        if not isinstance(spec, dict) or "class" not in spec:
            raise ValueError(f"wrappers/models.yaml: entry {name!r} needs a mapping with a 'class' key")
    return entries


def defense_entries() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(defense name -> {class, settings}, the file's other sections) from ``wrappers/defenses.yaml``, with
    ``extends`` resolved."""
    data = _yaml("defenses.yaml")
    raw, out = data.get("defenses") or {}, {}

    def resolve(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if name not in raw:
            close = difflib.get_close_matches(name, list(raw), n=3)
            raise KeyError(
                f"wrappers/defenses.yaml: unknown defense {name!r}" + (f"; did you mean {close}?" if close else "")
            )
        if name in seen:
            raise ValueError(f"wrappers/defenses.yaml: `extends` cycle through {name!r}")
        spec = raw[name]
        base = resolve(spec["extends"], (*seen, name)) if "extends" in spec else {"settings": {}}
        return {
            "class": spec.get("class", base.get("class")),
            "settings": {**base["settings"], **(spec.get("settings") or {})},
        }

    for name in raw:
        out[name] = resolve(name)
    return out, {"encoders": data.get("encoders") or {}, "inner_settings": data.get("inner_settings") or {}}


RUNNERS = ("plugin", "served", "host")  # who runs an inner model: the plugin's backend, an endpoint, the host


def defense_settings(cls: type, spec: dict[str, Any], extra: dict[str, Any], inner: str, runner: str) -> dict:
    """The settings a defense entry gets around one inner model: the shared sections (encoders by who runs the
    inner model, one of `RUNNERS`; per-inner changes) reach only defenses that have such settings; the entry's
    own always do, and so do per-inner changes under the defense's class name."""
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}; expected one of {RUNNERS}")
    encoders = extra["encoders"].get(runner, {})
    per_inner = extra["inner_settings"].get(inner, {})
    classes = _classes()  # a key naming a defense class holds settings of that class only
    shared = {k: v for k, v in per_inner.items() if k not in classes}
    return {
        **_accepted(cls, {"encoders": encoders}),
        **spec["settings"],
        **_accepted(cls, shared),
        **(per_inner.get(cls.__name__) or {}),
    }


def inner_name(model: str) -> str:
    """The inner model of a registered name: ``EchoSafe_X``, ``EchoSafe-k3_X`` and ``Base_X`` give ``X``; a name
    without a defense prefix is its own inner model."""
    defenses, _ = defense_entries()
    for prefix in sorted((*(f"{d}_" for d in defenses), BASE_PREFIX), key=len, reverse=True):
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model


@dataclass(frozen=True)
class Row:
    """A registered row: the defense class and its settings around one inner model. ``inner_spec`` is the
    inner model's plugin entry (``{class, ...}``), None for a model the plugin does not run itself (a host
    model); ``runner`` says who runs the inner model (one of `RUNNERS`)."""

    name: str
    defense: type
    settings: dict[str, Any]
    inner: str
    inner_spec: dict[str, Any] | None
    runner: str


def plugin_models(served: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every inner model the plugin runs itself: ``wrappers/models.yaml`` entries, then endpoints (``served``:
    name -> `ServedVLM` arguments), each as ``{class, ...constructor arguments}``."""
    out = {n: dict(spec) for n, spec in model_entries().items()}
    out.update({n: {"class": "ServedVLM", **spec} for n, spec in (served or {}).items()})
    return out


def runner_of(spec: dict[str, Any] | None) -> str:
    if spec is None:
        return "host"
    from .models.served import ServedVLM

    return "served" if issubclass(_class(spec["class"], "wrappers/models.yaml"), ServedVLM) else "plugin"


def resolve(name: str, served: dict[str, dict[str, Any]] | None = None) -> Row:
    """The row called ``name``: ``<Defense>_<inner>``, ``Base_<inner>``, or a plugin inner model's own name (its
    undefended row). An inner model outside the plugin's YAML is a host model (``inner_spec`` None)."""
    defenses, extra = defense_entries()
    models = plugin_models(served)
    inner = inner_name(name)
    prefix = name[: len(name) - len(inner)].removesuffix("_")
    spec = models.get(inner)
    runner = runner_of(spec)
    if prefix in ("", BASE_PREFIX.rstrip("_")):
        return Row(name, _class("Undefended", "catalog"), {}, inner, spec, runner)
    entry = defenses[prefix]
    cls = _class(entry["class"], "wrappers/defenses.yaml")
    return Row(name, cls, defense_settings(cls, entry, extra, inner, runner), inner, spec, runner)


def build_inner(spec: dict[str, Any], **overrides: Any) -> Any:
    """A plugin inner model from its entry (``{class, ...}``), constructor arguments overridden by ``overrides``."""
    spec = {**spec, **overrides}
    return _class(spec.pop("class"), "wrappers/models.yaml")(**spec)
