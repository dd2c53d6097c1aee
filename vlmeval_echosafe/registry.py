"""Register the plugin into VLMEvalKit.

The host has no plugin hook: its registries are module-level objects that ``vlmeval.run`` imported by
reference, so they are mutated in place (never rebound) before ``vlmeval.run.main()`` runs. Models and defenses
are declared in ``wrappers/*.yaml``; registering is reading those files.
"""

from __future__ import annotations

import difflib
import os
from functools import partial
from typing import Any

import yaml

from .paths import config_file


def _classes() -> dict[str, type]:
    from .defenses.adashield_a import AdaShieldA
    from .defenses.echosafe import EchoSafe
    from .defenses.ecso import ECSO
    from .defenses.prompts import AdaShieldS, FigStepPrompt, PromptDefense, SafetyPrompt
    from .models.served import ServedVLM
    from .models.transformers_vlm import TransformersVLM

    return {
        "TransformersVLM": TransformersVLM,
        "ServedVLM": ServedVLM,
        "EchoSafe": EchoSafe,
        "PromptDefense": PromptDefense,
        "SafetyPrompt": SafetyPrompt,
        "FigStepPrompt": FigStepPrompt,
        "AdaShieldS": AdaShieldS,
        "AdaShieldA": AdaShieldA,
        "ECSO": ECSO,
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
    own always do."""
    if runner not in RUNNERS:
        raise ValueError(f"runner {runner!r}; expected one of {RUNNERS}")
    encoders = extra["encoders"].get(runner, {})
    return {
        **_accepted(cls, {"encoders": encoders}),
        **spec["settings"],
        **_accepted(cls, extra["inner_settings"].get(inner, {})),
    }


def inner_name(model: str) -> str:
    """The inner model of a registered name: ``EchoSafe_X``, ``EchoSafe-k3_X`` and ``Base_X`` give ``X``; a name
    without a defense prefix is its own inner model."""
    defenses, _ = defense_entries()
    for prefix in sorted((*(f"{d}_" for d in defenses), BASE_PREFIX), key=len, reverse=True):
        if model.startswith(prefix) and len(model) > len(prefix):
            return model[len(prefix) :]
    return model


def register(work_dir: str | None = None, served: dict[str, dict[str, Any]] | None = None) -> None:
    """Add the plugin's datasets, models and defenses to VLMEvalKit's registries; calling it again changes nothing
    but the run folder the defenses write their memory and traces to (``work_dir``, as the launcher knows it).
    ``served``: inner models behind an endpoint (name -> `ServedVLM` arguments; the launcher's ``--base-url``),
    registered like `wrappers/models.yaml` entries, after them."""
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

    from .models.served import ServedVLM

    registry = vlmeval.config.supported_VLM
    runners: dict[str, str] = {}
    declared = [(n, dict(spec), "wrappers/models.yaml") for n, spec in model_entries().items()]
    declared += [(n, {"class": "ServedVLM", **spec}, "--base-url") for n, spec in (served or {}).items()]
    for name, spec, where in declared:
        cls = _class(spec.pop("class"), where)
        setattr(vlmeval.vlm, cls.__name__, cls)
        registry[name] = partial(cls, **spec)
        runners[name] = "served" if issubclass(cls, ServedVLM) else "plugin"

    defenses, extra = defense_entries()
    prefixes = (*(f"{d}_" for d in defenses), BASE_PREFIX)
    inners = [n for n in list(registry) if not n.startswith(prefixes)]
    work_dir = work_dir or "outputs"
    for dname, spec in defenses.items():
        cls = _class(spec["class"], "wrappers/defenses.yaml")
        setattr(vlmeval.vlm, cls.__name__, cls)
        for inner in inners:
            full = f"{dname}_{inner}"
            settings = defense_settings(cls, spec, extra, inner, runners.get(inner, "host"))
            registry[full] = partial(
                cls, inner=inner, name=full, run_dir=os.path.join(work_dir, full), settings=settings
            )
    for inner in inners:
        registry[f"{BASE_PREFIX}{inner}"] = registry[inner]
