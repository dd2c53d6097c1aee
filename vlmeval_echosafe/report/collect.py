"""Find every MM-SafetyBench++ result under a VLMEvalKit work dir and load it as one long table.

Evaluation writes ``<model>_<dataset>_<judge>_score.csv`` (and ``_items.csv``) next to the host's prediction
file (``<work>/<model>/``; VLMEvalKit may also keep copies in ``T<date>`` run folders). The numbers are read
from the score file as written by ``metrics.summarize``; when only the items file exists,
``metrics.summarize`` is run on it. Nothing is recomputed by hand here. Rows of a refusal-only judge carry
``NonRefusalRate`` / ``CCR_NonRefusal`` instead of ``AR`` / ``CCR`` (docs/metrics.md), also when they come from
a score file written before those names existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import metrics
from ..datasets.config import load_config
from ..judges import REFUSAL_ONLY
from .lmms import parse_lmms_name
from .runinfo import batch_size, config_for, labels_used, order_label

SCORE_SUFFIX, ITEMS_SUFFIX = "_score.csv", "_items.csv"
# Columns a score file must have to be one of ours (VLMEvalKit's other datasets also write *_score.csv), plus a
# CCR under one of its two names.
SCORE_COLUMNS = ("judge", "refusal_only", "mode", "category", "RR")
CCR_COLUMNS = ("CCR", metrics.NON_REFUSAL_NAMES["CCR"])
RULE_LABEL = "rule (refusal-only)"


class ReportError(RuntimeError):
    """Nothing to report (empty or foreign work dir, unreadable files); printed without a traceback."""


@dataclass(frozen=True)
class Result:
    """One evaluated (model, dataset, judge) combination and the files it came from."""

    model: str
    dataset: str
    judge_file_name: str  # the judge part of the file names ('/' replaced by '_')
    score: Path | None
    items: Path | None
    order: str = ""  # an EchoSafe run's stream order (``file``, ``shuffle:<seed>``); "" for other models

    @property
    def stem(self) -> str:
        return f"{self.model}_{self.dataset}_{self.judge_file_name}"


def dataset_names() -> list[str]:
    """Registered MM-SafetyBench++ variants, longest first so ``…_GenOCR`` wins over ``…_Gen``."""
    return sorted(load_config()["variants"], key=len, reverse=True)


def parse_name(path: Path, suffix: str) -> tuple[str, str, str] | None:
    """``<model>_<dataset>_<judge><suffix>`` -> (model, dataset, judge), or None for a foreign file; the lmms-eval
    task's ``mmsafetybenchpp/<dataset>_<judge><suffix>`` as in :mod:`.lmms`."""
    lmms = parse_lmms_name(path, suffix, dataset_names())
    if lmms is not None:
        return lmms
    name = path.name
    if not name.endswith(suffix):
        return None
    body = name[: -len(suffix)]
    for ds in dataset_names():
        marker = f"_{ds}_"
        pos = body.rfind(marker)
        # The dataset sits between a non-empty model and judge (longest variant names tried first).
        if pos > 0 and body[pos + len(marker) :]:
            model, judge = body[:pos], body[pos + len(marker) :]
            return model, ds, judge
    return None


def find_results(work_dir: Path) -> tuple[list[Result], list[str]]:
    """All results under ``work_dir`` and skip notes. Copies of one run (VLMEvalKit's run folders) are deduplicated,
    the copy nearest the work dir wins; EchoSafe runs in different stream orders (``compare --orders``: one work
    folder each) are different results."""
    found: dict[tuple[str, str, str, str], dict[str, Path]] = {}
    notes: list[str] = []
    candidates = sorted(
        [*work_dir.rglob(f"*{SCORE_SUFFIX}"), *work_dir.rglob(f"*{ITEMS_SUFFIX}")],
        key=lambda p: (len(p.relative_to(work_dir).parts), str(p)),
    )
    for path in candidates:
        suffix = SCORE_SUFFIX if path.name.endswith(SCORE_SUFFIX) else ITEMS_SUFFIX
        parsed = parse_name(path, suffix)
        if parsed is None:
            continue
        kind = "score" if suffix == SCORE_SUFFIX else "items"
        slot = found.setdefault((*parsed, order_label(config_for(path, parsed[0]), parsed[1])), {})
        if kind in slot:
            notes.append(f"duplicate {path} ignored (using {slot[kind]})")
            continue
        slot[kind] = path
    results = [Result(m, d, j, f.get("score"), f.get("items"), o) for (m, d, j, o), f in sorted(found.items())]
    return results, notes


def judge_label(judge: str, refusal_only: bool) -> str:
    """The judge as shown in every table: the rule judge is visibly refusal-only."""
    if not refusal_only:
        return judge
    return RULE_LABEL if judge == "rule" else f"{judge} (refusal-only)"


def _read_score(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path)
    missing = [c for c in SCORE_COLUMNS if c not in table.columns]
    missing += [] if any(c in table.columns for c in CCR_COLUMNS) else [" or ".join(CCR_COLUMNS)]
    if missing:
        raise ReportError(f"{path}: not an MM-SafetyBench++ score file (lacks {missing}; has {list(table.columns)})")
    return table


def _summarize_items(path: Path, judge: str, n_boot: int) -> pd.DataFrame:
    items = pd.read_csv(path)
    refusal_only = judge in REFUSAL_ONLY  # the judges without a quality score (judges/__init__.py)
    summary = metrics.summarize(items, n_boot=n_boot, refusal_only=refusal_only)
    summary.insert(0, "judge", judge)
    summary.insert(1, "refusal_only", refusal_only)
    return summary


def load_result(result: Result, n_boot: int = 1000) -> pd.DataFrame:
    """The result's summary rows (score file, else ``metrics.summarize`` of the items) + identity columns."""
    if result.score is not None:
        table, source = _read_score(result.score), result.score
    else:
        table, source = _summarize_items(result.items, result.judge_file_name, n_boot), result.items
    table["refusal_only"] = table["refusal_only"].astype(str).str.lower().isin(("true", "1"))
    table = table.rename(columns=metrics.public_names(bool(table["refusal_only"].all())))
    judge = str(table["judge"].iloc[0]) if len(table) else result.judge_file_name
    table = table.drop(columns=["judge"])
    table.insert(0, "model", result.model)
    table.insert(1, "dataset", result.dataset)
    table.insert(2, "judge", judge_label(judge, bool(table["refusal_only"].all())))
    table.insert(3, "judge_name", judge)
    table.insert(4, "order", result.order)
    table.insert(5, "labels_used", labels_used(config_for(Path(source), result.model)))
    table.insert(6, "batch_size", batch_size(Path(source), result.model, result.dataset))
    table["source"] = str(source)
    return table


def collect(work_dir: str | Path, n_boot: int = 1000) -> tuple[pd.DataFrame, list[Result], list[str]]:
    """The long leaderboard table of every result under ``work_dir``; ReportError when there is none."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise ReportError(f"work dir {work_dir} does not exist or is not a directory")
    results, notes = find_results(work_dir)
    if not results:
        raise ReportError(
            f"no MM-SafetyBench++ results under {work_dir}: expected files named "
            f"<model>_<dataset>_<judge>{SCORE_SUFFIX} or {ITEMS_SUFFIX} for a dataset in "
            f"{', '.join(sorted(dataset_names()))}. Run `python run.py --data MMSafetyBenchPP_Demo --model … "
            f"--judge rule --work-dir {work_dir}` first."
        )
    frames = []
    for res in results:
        try:
            frames.append(load_result(res, n_boot=n_boot))
        except ReportError as err:
            notes.append(f"skipped: {err}")
    if not frames:
        raise ReportError(f"no readable MM-SafetyBench++ results under {work_dir}:\n  " + "\n  ".join(notes))
    return pd.concat(frames, ignore_index=True), results, notes
