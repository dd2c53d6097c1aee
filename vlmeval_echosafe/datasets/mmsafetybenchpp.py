"""MM-SafetyBench++ as a VLMEvalKit image dataset.

The harness only knows ``load_data`` / ``build_prompt`` / ``evaluate``; everything benchmark-specific (sources,
validation, judging, metrics) lives in harness-free modules and is called from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from vlmeval.dataset.image_base import ImageBaseDataset
from vlmeval.smp import load

from ..evaluation import MAX_UNKNOWN_RATE, evaluate, paths_for
from ..judges import Judge, make_judge
from ..metrics import ccr_name
from ..vlmevalkit.rows import PromptRows
from . import order
from .config import load_config
from .source import DataSource, record_evaluation
from .variants import image_files, load_variant_source

__all__ = ["MMSafetyBenchPP", "evaluate_predictions", "output_paths"]


class MMSafetyBenchPP(ImageBaseDataset):
    """Paired unsafe/safe image+question items; metrics RR, AR (or NonRefusalRate), QS, CCR, QS-HM per category
    and mode."""

    TYPE = "VQA"
    MODALITY = "IMAGE"
    DEFAULT_JUDGE = "rule"
    # Without this, models such as Qwen2-VL add their own VQA prompt ("answer with short words").
    force_use_dataset_prompt = True

    @classmethod
    def supported_datasets(cls) -> list[str]:
        return list(load_config()["variants"])

    def load_data(self, dataset: str) -> pd.DataFrame:
        # The stream order (file / seeded shuffle) is applied to the rows, which the host runs in order; it is
        # kept on the object so a stateful defense records which stream it saw.
        self.stream_order = order.requested()
        # The row (pair id, category, mode, label) of every prompt build_prompt returns, which the launcher hands
        # a defense: the host passes a model the message alone.
        self.prompt_rows = PromptRows(dataset)
        frame, self.data_source = load_variant_source(dataset)
        return self.stream_order.apply(frame)

    def build_prompt(self, line: pd.Series | int) -> list[dict[str, str]]:
        if isinstance(line, int):
            line = self.data.iloc[line]
        paths = line["image_path"] if self.meta_only else self.dump_image(line)
        paths = paths if isinstance(paths, list) else [paths]
        message = [*(dict(type="image", value=p) for p in paths), dict(type="text", value=line["question"])]
        self.prompt_rows.register(message, line)
        return message

    def evaluate(self, eval_file: str, **judge_kwargs: Any) -> dict[str, Any]:
        max_unknown = float(judge_kwargs.pop("max_unknown_rate", MAX_UNKNOWN_RATE))
        judge = make_judge(judge_kwargs)
        # A judge that looks at the images gets this dataset's own rows, written next to the predictions.
        images = None
        if judge.wants_image:
            images = image_files(self.data, Path(f"{prediction_stem(eval_file)}_judge_images"))
        nproc = int(judge_kwargs.get("nproc") or 4)
        return evaluate_predictions(
            eval_file, judge, nproc, max_unknown, image_for=images, data_source=self.data_source
        )

    @classmethod
    def report_primary_metric(cls, metrics_: dict[str, Any] | None) -> dict[str, float]:
        """The run summary shows the CCR (``CCR`` or, under the rule judge, ``CCR_NonRefusal``), not whatever key
        sorts first. (The host flattens the summary to its numbers first, so the key is looked up by name.)"""
        for key in (ccr_name(False), ccr_name(True)):
            if (metrics_ or {}).get(key) is not None:
                return {key: metrics_[key]}
        return {}


def prediction_stem(eval_file: str | Path) -> Path:
    return Path(eval_file).parent / Path(eval_file).stem


def output_paths(eval_file: str | Path, judge_name: str) -> dict[str, Path]:
    """Where evaluation writes, next to the host's prediction file (so `--reuse` finds the records)."""
    return paths_for(prediction_stem(eval_file), judge_name)


def evaluate_predictions(
    eval_file: str | Path,
    judge: Judge,
    nproc: int = 4,
    max_unknown_rate: float = MAX_UNKNOWN_RATE,
    image_for: Any = None,
    data_source: DataSource | None = None,
) -> dict[str, Any]:
    """Judge a host prediction file through the shared pipeline (``evaluation.evaluate``); the files go next to
    it, where ``--reuse`` finds the judgement cache. Returns the run summary. The data source recorded beside the
    predictions (or, failing that, ``data_source``) goes into the score JSON."""
    preds = load(str(eval_file))
    recorded = record_evaluation(data_source, eval_file)
    return evaluate(
        preds,
        judge,
        prediction_stem(eval_file),
        nproc,
        max_unknown_rate,
        image_for=image_for,
        source=str(eval_file),
        data_source=recorded,
    ).result
