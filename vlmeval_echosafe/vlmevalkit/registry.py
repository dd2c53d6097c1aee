"""Register the plugin into VLMEvalKit.

The host has no plugin hook: its registries are module-level objects that ``vlmeval.run`` imported by
reference, so they are mutated in place (never rebound) before ``vlmeval.run.main()`` runs. Every row comes from
the catalog (:mod:`..catalog`, the YAML); each is a :class:`~.model.HostDefense` around a core defense.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import BASE_PREFIX, defense_entries, defense_settings, plugin_models, runner_of
from ..catalog import _class as catalog_class
from .inner import HostInner
from .model import HostDefense, host_model


def register(work_dir: str | None = None, served: dict[str, dict[str, Any]] | None = None) -> None:
    """Add the plugin's datasets, models and defenses to VLMEvalKit's registries; calling it again changes nothing
    but the run folder the defenses write their memory and traces to (``work_dir``, as the launcher knows it).
    ``served``: inner models behind an endpoint (name -> `ServedVLM` arguments; the launcher's ``--base-url``),
    registered like `wrappers/models.yaml` entries, after them."""
    import vlmeval.config
    import vlmeval.dataset
    import vlmeval.vlm

    from ..datasets.mmsafetybenchpp import MMSafetyBenchPP

    if MMSafetyBenchPP not in vlmeval.dataset.DATASET_CLASSES:
        vlmeval.dataset.DATASET_CLASSES.insert(0, MMSafetyBenchPP)
    for name in MMSafetyBenchPP.supported_datasets():
        if name not in vlmeval.dataset.SUPPORTED_DATASETS:
            vlmeval.dataset.SUPPORTED_DATASETS.append(name)
    setattr(vlmeval.dataset, MMSafetyBenchPP.__name__, MMSafetyBenchPP)
    setattr(vlmeval.vlm, HostDefense.__name__, HostDefense)

    registry = vlmeval.config.supported_VLM
    work_dir = work_dir or "outputs"
    undefended = catalog_class("Undefended", "catalog")
    models = plugin_models(served)
    for name, spec in models.items():
        registry[name] = partial(HostDefense, defense=undefended, inner=name, inner_spec=spec, name=name)

    defenses, extra = defense_entries()
    prefixes = (*(f"{d}_" for d in defenses), BASE_PREFIX)
    inners = [n for n in list(registry) if not n.startswith(prefixes)]
    for dname, entry in defenses.items():
        cls = catalog_class(entry["class"], "wrappers/defenses.yaml")
        for inner in inners:
            full = f"{dname}_{inner}"
            spec = models.get(inner)
            registry[full] = partial(
                HostDefense,
                defense=cls,
                inner=inner,
                inner_spec=spec,
                name=full,
                run_dir=os.path.join(work_dir, full),
                settings=defense_settings(cls, entry, extra, inner, runner_of(spec)),
            )
    for inner in inners:
        registry[f"{BASE_PREFIX}{inner}"] = registry[inner]


def check_planned_run(keywords: dict[str, Any], dataset: str, resuming: bool) -> None:
    """Before any model is built: refuse a run of a registered EchoSafe row (the keywords of its ``supported_VLM``
    entry) that would continue, or reuse the predictions of, a bank built with other settings. ``resuming``: the
    host has this dataset's prediction file or checkpoint (it would then skip the rows it holds)."""
    from ..core.inner import adapter_class, protocol_of
    from ..datasets import order as stream_order
    from ..echosafe import EchoSafe
    from ..echosafe.settings import RUN_CONFIG, EchoSafeSettings, check_resume, run_config
    from .inner import host_protocol

    kw = keywords
    cls = kw.get("defense")
    if not (isinstance(cls, type) and issubclass(cls, EchoSafe)):
        return
    settings = EchoSafeSettings(**kw.get("settings", {}))
    spec = kw.get("inner_spec")
    if spec:
        protocol = protocol_of(catalog_class(spec["class"], "wrappers/models.yaml"))
    else:
        from vlmeval.config import supported_VLM

        host = supported_VLM[kw["inner"]]
        protocol = host_protocol(getattr(host, "func", host))
    reflection = adapter_class(protocol).planned()
    # A served endpoint's decoding is known once the model is built; the first item's resume check compares it.
    later = tuple(f"reflection.{k}" for k, v in reflection.items() if v is None)
    config = run_config(settings, reflection, stream_order.requested().as_dict())
    banks = Path(kw["run_dir"]) / "echosafe_bank"
    if not settings.writes or not banks.is_dir():
        return
    for saved in sorted(banks.rglob(RUN_CONFIG)):
        namespace = saved.parent.relative_to(banks).parts
        if resuming and namespace[0] in (dataset, "all"):
            check_resume(saved.parent, config, decided_later=later)


def host_inner(name: str, **kwargs: Any) -> HostInner:
    """A model only VLMEvalKit knows, by its registry name, as an inner model (the plugin registered first)."""
    register()
    return HostInner(host_model(name, **kwargs))
