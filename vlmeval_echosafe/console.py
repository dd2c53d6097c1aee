"""What a run prints: a quiet console, one closing summary, and one line per expected failure.

A first run should end with the per-category table and the paths of what it wrote, not with the host's own dumps
of the same numbers. Both harnesses print the closing summary through :func:`closing_block`, so paths look the
same (relative to the working folder when inside it, absolute otherwise). Everything left off the console still
goes to the host's log file; ``--verbose`` (the host's flag) shows it all as before. Imports nothing heavy: the
lmms-eval entry point loads this module at start-up.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
from pathlib import Path
from typing import Any

HOST_LOGGER = "vlmeval"  # VLMEvalKit's root logger: console handler + log file handler (vlmeval.smp.log)
# Host notices logged on every normal run; they stay in the log file.
_ROUTINE = ("--reuse is not set, this run will start from a fresh output directory",)
_FINISHED = re.compile(r"The evaluation of model (?P<model>.+) x dataset (?P<dataset>.+) has finished!")
_COMBINATION_FAILED = re.compile(r"Model .+ x Dataset .+ combination failed: ")
_PREFIX = "vlmeval-echosafe: "


class HostEnvFileNotice(logging.Filter):
    """Drops the one record ``import vlmeval`` logs at ERROR when its optional ``.env`` file is absent.

    VLMEvalKit reads API keys from ``<site-packages>/.env`` if that file exists (beside the installed package,
    where a user of a wheel would not put one) and otherwise logs "Did not detect the .env file …" at ERROR,
    on every run. The plugin takes judge keys from the environment and ``--judge-key``, so the missing file is
    not an error for it; only that record is dropped. A ``.env`` that does exist is still loaded and logged by
    the host as before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.ERROR
            and record.funcName == "load_env"
            and str(record.msg).startswith("Did not detect the .env file")
        )


def drop_host_env_notice() -> None:
    """For harnesses that import VLMEvalKit at a moment the plugin does not control (lmms-eval builds the model
    after loading entry points): the notice filter stays on the root logger, where ``load_env`` logs."""
    root = logging.getLogger()
    if not any(isinstance(f, HostEnvFileNotice) for f in root.filters):
        root.addFilter(HostEnvFileNotice())


def unnest_weight_bars() -> None:
    """A weight-loading bar opened while another bar runs (an encoder loaded at the first item, under the
    inference bar) is drawn at position 1 and writes a raw cursor-up escape (``[A``) into a redirected log: such
    a nested transformers bar is left out; bars opened when none is running are shown as usual."""
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if len(tqdm._instances):  # type: ignore[attr-defined]  # tqdm's registry of open bars
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    hf_logging.set_tqdm_hook(hook)


def shown(path: str | os.PathLike[str]) -> str:
    """One style for every printed path: relative to the working folder when inside it, absolute otherwise."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel == ".." or rel.startswith(".." + os.sep) else rel


def closing_block(title: str, table: str, paths: dict[str, Path | None], memory: str | None = None) -> str:
    """A result as both harnesses end with it: title, EchoSafe memory line, the table, then the paths."""
    lines = [f"\n{title}"]
    if memory:
        lines.append(f"EchoSafe memory: {memory}")
    lines.append(table)
    width = max(len(k) for k in paths) + 2
    lines += [f"{k + ':':<{width}}{shown(p)}" for k, p in paths.items() if p is not None]
    return "\n".join(lines)


def echosafe_files(run_dir: Path, model: str, dataset: str) -> tuple[Path | None, Path | None, str | None]:
    """(bank folder, trace, memory line) of a defense's run over ``dataset``; None where the model keeps none."""
    from .report.traces import TRACE_SUFFIX, format_insight_counts, insight_counts

    trace = run_dir / f"{model}_{dataset}{TRACE_SUFFIX}"
    banks = [run_dir / "echosafe_bank" / ns for ns in (dataset, "all")]
    bank = next((b for b in banks if b.exists()), None)
    if not trace.exists():
        return bank, None, None
    return bank, trace, format_insight_counts(insight_counts(trace))


def print_run_summary(work_dir: str, judge: str, models: list[str], datasets: list[str]) -> None:
    """``run.py``'s closing summary: for every MM-SafetyBench++ result this run produced, the per-category table
    (RR / AR / CCR, or under the rule judge RR / NonRefusalRate / CCR_NonRefusal, rendered as the lmms-eval task
    renders it), then its predictions, scores, and, for EchoSafe, bank and trace."""
    import json

    import pandas as pd
    from vlmeval.smp import get_pred_file_path

    from .datasets.mmsafetybenchpp import MMSafetyBenchPP, output_paths
    from .evaluation import render

    for m in models:
        run_dir = Path(work_dir) / m
        for d in (d for d in datasets if d in MMSafetyBenchPP.supported_datasets()):
            pred = get_pred_file_path(str(run_dir), m, d, use_env_format=True)
            paths = output_paths(pred, judge)
            if not paths["score"].exists() or not paths["summary"].exists():
                continue
            summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
            table = render(pd.read_csv(paths["score"]), summary, "re-run with --reuse")
            bank, trace, memory = echosafe_files(run_dir, m, d)
            files = {"predictions": Path(pred), "scores": paths["score"], "bank": bank, "trace": trace}
            title = f"{m} x {d}, judge {summary['judge']} (version {summary['judge_version']})"
            print(closing_block(title, table, files, memory), flush=True)


class QuietConsole(logging.Filter):
    """On the host's console handler (never its log file): leaves off what the closing summary repeats.

    Shown: warnings and errors, and the host's own evaluation results for datasets the plugin does not summarise.
    Left off: INFO chatter, the evaluation dump and run summary of MM-SafetyBench++ datasets, routine notices, and
    a failed combination's record (the launcher names the combination, the error and the log file at the end)."""

    def __init__(self, ours: set[str], others: bool) -> None:
        super().__init__()
        self.ours, self.others = ours, others
        self._show_next = 0  # records following a header that belong to it (the dump after "Evaluation Results:")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        finished = _FINISHED.match(text)
        if finished:
            self._show_next = 2 if finished["dataset"].strip() not in self.ours else 0
            return bool(self._show_next)
        if text.startswith("Run Summary Report"):
            self._show_next = 1 if self.others else 0
            return self.others
        if self._show_next:
            self._show_next -= 1
            return True
        if record.levelno < logging.WARNING or text in _ROUTINE:
            return False
        return not _COMBINATION_FAILED.match(text)


class _NoTraceback(logging.Formatter):
    """The host's console format without tracebacks; the line says where the traceback went."""

    def __init__(self, base: logging.Formatter | None, log_file: str | None) -> None:
        super().__init__()
        self.base, self.log_file = base or logging.Formatter(), log_file

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            text = self.base.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if saved[0] and self.log_file:
            text += f" (traceback in {shown(self.log_file)})"
        return text


class HostConsole:
    """Quiets the host's console handler once the host has set up its logger (``vlmeval.run.setup_logger``, called
    inside ``main()``), and knows the host's log file."""

    def __init__(self, verbose: bool, ours: list[str], datasets: list[str]) -> None:
        self.verbose = verbose
        self.ours, self.others = set(ours), any(d not in ours for d in datasets)

    def install(self, run_module: Any) -> None:
        original = getattr(run_module, "_echosafe_host_setup_logger", run_module.setup_logger)
        run_module._echosafe_host_setup_logger = original

        def quieted(*args: Any, **kwargs: Any) -> Any:
            logger = original(*args, **kwargs)
            self.apply()
            return logger

        run_module.setup_logger = quieted
        if not self.verbose:
            unnest_weight_bars()

    @property
    def log_file(self) -> str | None:
        files = [h for h in logging.getLogger(HOST_LOGGER).handlers if isinstance(h, logging.FileHandler)]
        return files[-1].baseFilename if files else None

    def apply(self) -> None:
        """(Re)configure every console handler of the host logger; in one process repeated launches reuse it."""
        for handler in logging.getLogger(HOST_LOGGER).handlers:
            if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
                continue
            for old in [f for f in handler.filters if isinstance(f, QuietConsole)]:
                handler.removeFilter(old)
            if isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(handler.formatter.base)
            if not self.verbose:
                handler.addFilter(QuietConsole(self.ours, self.others))
                handler.setFormatter(_NoTraceback(handler.formatter, self.log_file))

    def failed(self, failures: list[tuple[str, str, str]]) -> str:
        """One message for the failed combinations: each with its error (which names the fix), once, and where the
        traceback is."""
        lines = [f"{_PREFIX}{m} x {d} failed: {why.removeprefix(_PREFIX)}" for m, d, why in failures]
        if self.log_file:
            lines.append(f"{_PREFIX}traceback and host log: {shown(self.log_file)}")
        return "\n".join(lines)


# ---- lmms-eval: its own results table comes last, so the closing summary is printed at exit, after it --------
_AT_EXIT: list[str] = []


def print_at_exit(block: str) -> None:
    """Print ``block`` when the process ends (after lmms-eval's own table), in the order given."""
    if not _AT_EXIT:
        atexit.register(lambda: print("\n".join(_AT_EXIT), flush=True))
    _AT_EXIT.append(block)


def lmms_run_dir(args: Any) -> tuple[Path, str] | None:
    """(``work_dir``, model name) of an lmms-eval run of the plugin's models, from ``--model`` / ``--model_args``
    as the adapter reads them (``vlmeval_echosafe/lmms/models.py``); None for other models."""
    model, raw = getattr(args, "model", None), getattr(args, "model_args", None) or ""
    if model not in ("echosafe", "vlmeval_echosafe"):
        return None
    if isinstance(raw, dict):
        given = {k: str(v) for k, v in raw.items()}
    else:
        given = dict(part.split("=", 1) for part in str(raw).split(",") if "=" in part)
    inner = given.get("inner")
    name = given.get("name") if model == "vlmeval_echosafe" else inner and f"{given.get('defense', 'EchoSafe')}_{inner}"
    if not name:
        return None
    return Path(given.get("work_dir", "outputs/lmms_eval")) / name, name
