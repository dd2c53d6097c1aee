"""MM-SafetyBench++ task functions for lmms-eval, referenced from ``task_configs/lmms_eval/*.yaml`` with ``!function``.

Glue only: rows come from ``datasets.variants`` (the same loader VLMEvalKit's dataset class uses), responses are
judged by the plugin's judges, and every number comes from ``metrics.summarize`` through one parameterised
aggregation. The judge is chosen in the template's ``metadata`` (``judge``, ``judge_args``) and can be overridden
per run with the env vars ``MMSBPP_JUDGE`` / ``MMSBPP_JUDGE_ARGS`` (JSON), read once in :func:`judge_settings`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from PIL import Image

from .. import metrics
from ..datasets import order
from ..datasets.config import load_config
from ..datasets.release import Rows, resolve_root, rows_to_frame
from ..datasets.schema import COLUMNS
from ..datasets.source import DataSource, announce
from ..datasets.validate import DatasetError
from ..datasets.variants import decode_image, load_variant_source, resolve_image_refs, select_variant
from ..judges import Judge, check_judge_choice, make_judge
from ..paths import config_file

log = logging.getLogger(__name__)

TEMPLATE = "task_configs/lmms_eval/_default_template_yaml"
# lmms-eval metric name -> column of metrics.summarize. The same record feeds each; one aggregation serves all.
METRICS = {"CCR": "CCR", "RR": "RR", "AR": "AR", "QS_HM": "QS_HM"}
PRIMARY = "CCR"  # the aggregation of this metric also writes the per-item and per-category tables
ITEM_FIELDS = ("index", "pair_id", "category", "mode", "label")
JUDGE_ENV, JUDGE_ARGS_ENV = "MMSBPP_JUDGE", "MMSBPP_JUDGE_ARGS"


# ---- docs ----------------------------------------------------------------------------------------------------
def _as_docs(variant: str, frame: pd.DataFrame, source: DataSource):
    import datasets

    # lmms-eval builds the docs before inference: the place to refuse a judge that cannot work (no key, no URL).
    settings = dict(judge_settings())
    check_judge_choice(settings.pop("model"), settings)
    # What the load read and detected travels with every doc to the results (written by the CCR aggregation).
    # The stream order (MMSBPP_ORDER / MMSBPP_ORDER_SEED) is applied as VLMEvalKit's dataset applies it: lmms-eval
    # hands requests over in doc order, so both harnesses feed a stateful defense the same stream.
    frame = resolve_image_refs(frame).assign(dataset=variant, data_source=json.dumps(source.to_dict()))
    frame = order.requested().apply(frame)
    return datasets.Dataset.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def demo_docs(loaded: Any, variant: str = "MMSafetyBenchPP_Demo"):
    """``process_docs`` of the demo tasks: lmms-eval read the shipped TSV (``dataset_path: csv``); the rows handed
    on are the plugin's checksum-verified frame, after checking that lmms-eval read the same items."""
    frame, source = load_variant_source(variant)
    read = pd.DataFrame({c: [str(v) for v in loaded[c]] for c in ITEM_FIELDS})
    read = read[read["index"].isin(set(frame["index"]))].reset_index(drop=True)
    if not read.equals(frame[list(ITEM_FIELDS)].astype(str).reset_index(drop=True)):
        raise DatasetError(
            f"{variant}: the file lmms-eval loaded does not match the plugin's demo split; point "
            "dataset_kwargs.data_files at vlmeval_echosafe/data/mmsafetybenchpp_demo.tsv"
        )
    return _as_docs(variant, frame, source)


def release_docs(loaded: Any, variant: str):
    """``process_docs`` of the release tasks: the hub rows lmms-eval loaded, mapped through the plugin's release
    config (question files and image paths are read from the same snapshot, or from ``$MMSAFETYBENCHPP_ROOT``)."""
    cfg = load_config()["release"]
    spec = load_config()["variants"][variant]
    frame, source = rows_to_frame(
        Rows.loaded(loaded.to_pandas(), cfg["hf_repo"]),
        resolve_root(cfg),
        cfg,
        list(spec["modes"]),
        spec.get("question_style"),
    )
    frame = select_variant(variant, frame, cfg["hf_repo"])
    source = replace(source, rows=len(frame))
    announce(source)
    return _as_docs(variant, frame, source)


demo = partial(demo_docs, variant="MMSafetyBenchPP_Demo")
demo_mini = partial(demo_docs, variant="MMSafetyBenchPP_DemoMini")
gen = partial(release_docs, variant="MMSafetyBenchPP_Gen")
genocr = partial(release_docs, variant="MMSafetyBenchPP_GenOCR")
rephrased = partial(release_docs, variant="MMSafetyBenchPP_Rephrased")


def doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    if doc.get("image"):
        return [decode_image(doc["image"])]
    return [Image.open(doc["image_path"]).convert("RGB")]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    """The question exactly as VLMEvalKit's ``build_prompt`` sends it (no pre/post prompt: the models compared in
    both harnesses must see the same text)."""
    return doc["question"]


# ---- judging -------------------------------------------------------------------------------------------------
class _IgnoreFunctions(yaml.SafeLoader):
    """Reads the template's plain keys; its ``!function`` tags are lmms-eval's business."""


_IgnoreFunctions.add_constructor("!function", lambda loader, node: None)


def _template_metadata() -> dict[str, Any]:
    text = config_file(TEMPLATE).read_text(encoding="utf-8")
    return (yaml.load(text, Loader=_IgnoreFunctions) or {}).get("metadata") or {}


@lru_cache(maxsize=1)
def judge_settings() -> dict[str, Any]:
    """``{"model": ..., **judge_args}``: the template's metadata, overridden by MMSBPP_JUDGE / MMSBPP_JUDGE_ARGS."""
    meta = _template_metadata()
    model = os.environ.get(JUDGE_ENV) or meta.get("judge")
    args = dict(meta.get("judge_args") or {})
    if os.environ.get(JUDGE_ARGS_ENV):
        args.update(json.loads(os.environ[JUDGE_ARGS_ENV]))
    return {"model": model, **args}


@lru_cache(maxsize=1)
def judge() -> Judge:
    settings = dict(judge_settings())
    settings.pop("max_unknown_rate", None)
    return make_judge(settings)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    """One judged record per item (VLMEvalKit's ``*_items.csv`` fields plus the prediction), under every metric
    name."""
    from ..judges.records import item_from_row

    j = judge()
    response = results[0] if results else None
    verdict = j.judge(item_from_row(doc, response))
    record = {
        **{k: str(doc[k]) for k in ITEM_FIELDS},
        "dataset": doc.get("dataset"),
        "prediction": response,
        "decision": verdict.decision,
        "score": verdict.score,
        "judge_error": verdict.error or "",
        "judge": j.name,
        "refusal_only": j.refusal_only,
        "data_source": doc.get("data_source"),
    }
    return {name: record for name in METRICS}


# ---- aggregation ---------------------------------------------------------------------------------------------
def overall(summary: pd.DataFrame, column: str) -> float:
    """Mean over modes of the per-mode category means (VLMEvalKit's headline numbers); NaN when any is missing."""
    return float(summary.loc[summary["category"] == metrics.ALL, column].mean(skipna=False))


def aggregate(records: list[dict[str, Any]], metric: str, args: Any = None) -> float:
    """Every lmms-eval metric of the task: ``metrics.summarize`` over the per-item records, one column of it."""
    table = pd.DataFrame(records)
    summary = metrics.summarize(table)
    if metric == PRIMARY:
        _write_tables(table, summary, args)
    return overall(summary, METRICS[metric])


def _write_tables(table: pd.DataFrame, summary: pd.DataFrame, args: Any) -> None:
    """``<output_path>/mmsafetybenchpp/<dataset>_<judge>_{items,score}.csv``, as the VLMEvalKit path writes them."""
    out = Path(getattr(args, "output_path", None) or ".") / "mmsafetybenchpp"
    out.mkdir(parents=True, exist_ok=True)
    name = f"{table['dataset'].iloc[0]}_{str(table['judge'].iloc[0]).replace('/', '_')}"
    sources = sorted({s for s in table.pop("data_source") if s}) if "data_source" in table else []
    if sources:  # one load per task: a single record (a list would mean docs from several loads)
        loaded = [json.loads(s) for s in sources]
        record = {"recorded_at": "lmms-eval aggregation", "source": loaded[0] if len(loaded) == 1 else loaded}
        (out / f"{table['dataset'].iloc[0]}_data_source.json").write_text(json.dumps(record, indent=2))
    table.to_csv(out / f"{name}_items.csv", index=False)
    summary.to_csv(out / f"{name}_score.csv", index=False)
    shown = summary[["mode", "category", "RR", "AR", "CCR", "QS_HM", "unknown_unsafe", "unknown_safe"]]
    print(
        f"MM-SafetyBench++ ({name}), judge {table['judge'].iloc[0]}"
        f"{' (refusal-only: no QS)' if table['refusal_only'].iloc[0] else ''}:\n{shown.to_string(index=False)}\n"
        f"written: {out / (name + '_score.csv')}",
        flush=True,
    )


# One callable per metric name, as lmms-eval's metric_list needs; all of them are `aggregate`.
aggregate_CCR = partial(aggregate, metric="CCR")
aggregate_RR = partial(aggregate, metric="RR")
aggregate_AR = partial(aggregate, metric="AR")
aggregate_QS_HM = partial(aggregate, metric="QS_HM")

__all__ = [
    "COLUMNS",
    "METRICS",
    "aggregate",
    "demo",
    "demo_mini",
    "doc_to_text",
    "doc_to_visual",
    "gen",
    "genocr",
    "rephrased",
    "judge_settings",
    "process_results",
]
