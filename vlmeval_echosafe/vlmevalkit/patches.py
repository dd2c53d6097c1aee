"""Every patch the launcher applies to VLMEvalKit, in one place.

The host has no plugin hook, so the launcher wraps a few of its module-level functions in place (each wrapper
keeps the host's original, so repeated launches in one process do not stack wrappers): the status updates it
reports (to turn a failed model x dataset into a non-zero exit), the argv it records (masked), the inference job
(to record what an MM-SafetyBench++ load read), the TLS default ``import vlmeval`` switches off, and its
missing-``.env`` ERROR line. The inference loop itself is replaced by :mod:`.runner`; checkpoints are written
atomically by :mod:`.checkpoint`.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..console import HostEnvFileNotice
from ..redact import mask_argv

# Set before vlmeval is imported: ms-vlmeval defaults to ModelScope, which it does not ship.
HOST_ENV_DEFAULTS = {"VLMEVALKIT_USE_MODELSCOPE": "0", "PRED_FORMAT": "tsv"}
# Host skip reasons that are a requested outcome rather than a failure.
_EXPECTED_SKIPS = {"mode_infer"}


@dataclass
class Outcome:
    """What the host reported for one model × dataset combination during this run."""

    done: bool = False
    evaluated: bool = False
    errors: list[str] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)

    def failure(self, mode: str) -> str | None:
        if self.errors:
            return self.errors[-1]
        unexpected = [s for s in self.skips if s not in _EXPECTED_SKIPS]
        if unexpected:
            return f"skipped by VLMEvalKit: {unexpected[-1]}"
        if not self.done:
            return "did not finish"
        if mode != "infer" and not self.evaluated:
            return "finished without evaluation results"
        return None


class OutcomeTracker:
    """Records the host's status updates by wrapping ``vlmeval.run.upsert_dataset_status`` in place."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], Outcome] = {}

    def install(self, run_module: Any) -> None:
        # Keep the host's own function so repeated launches in one process do not stack wrappers.
        original = getattr(run_module, "_echosafe_host_upsert", run_module.upsert_dataset_status)
        run_module._echosafe_host_upsert = original

        def recording(*args: Any, **kwargs: Any) -> Any:
            self._record(kwargs)
            return original(*args, **kwargs)

        run_module.upsert_dataset_status = recording

    def _record(self, kw: dict[str, Any]) -> None:
        out = self.outcomes.setdefault((kw.get("model_name"), kw.get("dataset_name")), Outcome())
        if kw.get("error_message"):
            out.errors.append(str(kw["error_message"]))
        if kw.get("skip_reason"):
            out.skips.append(str(kw["skip_reason"]))
        if kw.get("status") == "done":
            out.done = True
        if kw.get("metrics_source") is not None:
            out.evaluated = True

    def failures(self, models: list[str], datasets: list[str], mode: str) -> list[tuple[str, str, str]]:
        """(model, dataset, why) of every combination that failed."""
        found = []
        for m in models:
            for d in datasets:
                why = self.outcomes.get((m, d), Outcome()).failure(mode)
                if why:
                    found.append((m, d, why))
        return found


def mask_recorded_argv(run_module: Any, secrets: list[str]) -> None:
    """The host writes ``sys.argv`` into status.json; hand it a masked copy."""
    original = getattr(run_module, "_echosafe_host_upsert_run", run_module.upsert_run_status)
    run_module._echosafe_host_upsert_run = original

    def masked(*args: Any, **kwargs: Any) -> Any:
        if "argv" in kwargs:
            kwargs["argv"] = mask_argv(kwargs["argv"], secrets)
        return original(*args, **kwargs)

    run_module.upsert_run_status = masked


def import_host() -> tuple[Any, Any]:
    """Import VLMEvalKit's runner and inference modules without the host's missing-``.env`` ERROR line."""
    root = logging.getLogger()
    notice = HostEnvFileNotice()
    root.addFilter(notice)
    try:
        import vlmeval.inference as host_inference
        import vlmeval.run as host_run
    finally:
        root.removeFilter(notice)
    return host_run, host_inference


def record_data_sources(run_module: Any) -> None:
    """Before inference on an MM-SafetyBench++ dataset, write what its load read and detected beside the prediction
    file (``<model>_<dataset>_data_source.json``); a resumed file whose data was read differently stops here."""
    from ..datasets.source import record_inference, record_path
    from .files import rank_checkpoint

    original = getattr(run_module, "_echosafe_host_infer_data_job", run_module.infer_data_job)
    run_module._echosafe_host_infer_data_job = original

    def recording(model: Any, work_dir: str, model_name: str, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        source = getattr(dataset, "data_source", None)
        if source is not None:
            name, folder = dataset.dataset_name, Path(work_dir)
            resuming = any(folder.glob(f"{model_name}_{name}.*")) or rank_checkpoint(folder, name).exists()
            record_inference(source, record_path(folder / f"{model_name}_{name}.tsv"), resuming)
        return original(model, work_dir, model_name, dataset, *args, **kwargs)

    run_module.infer_data_job = recording


def restore_tls_verification() -> None:
    """`import vlmeval` switches certificate checks off for the whole process; switch them back on."""
    ssl._create_default_https_context = ssl.create_default_context
