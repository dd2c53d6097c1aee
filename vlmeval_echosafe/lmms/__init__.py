"""lmms-eval adapters: the plugin's models and defenses as lmms-eval models, MM-SafetyBench++ as lmms-eval tasks.

Thin on purpose: models are built from VLMEvalKit's registry after :func:`vlmeval_echosafe.register`, tasks call
the harness-free core (``datasets``, ``judges``, ``metrics``). lmms-eval finds the models through the
``lmms_eval.models`` entry point (setup.cfg), which calls :func:`model_manifests`; importing this package stays
cheap (no VLMEvalKit, no torch) because lmms-eval loads every entry point at start-up.
"""

from __future__ import annotations

MODELS = {
    # lmms-eval model id -> class in vlmeval_echosafe.lmms.models
    "vlmeval_echosafe": "VLMEvalKitModel",  # --model_args name=<any VLMEvalKit / plugin registry name>
    "echosafe": "EchoSafeModel",  # --model_args inner=<inner model name>[,k=5,reset=...]
}


def model_manifests() -> list:
    """Entry-point payload for lmms-eval's ``ModelRegistryV2``. lmms-eval loads it at start-up, before any model is
    built: the moment to drop the host's false missing-``.env`` ERROR, which ``import vlmeval`` logs later when a
    model of the plugin is built (:class:`..console.HostEnvFileNotice`; the launcher does the same for run.py)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    from ..console import drop_host_env_notice

    drop_host_env_notice()

    return [ModelManifest(model_id=mid, simple_class_path=f"{__name__}.models.{cls}") for mid, cls in MODELS.items()]
