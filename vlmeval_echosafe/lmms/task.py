"""MM-SafetyBench++ task functions for lmms-eval, referenced from ``task_configs/lmms_eval/*.yaml`` with ``!function``.

Glue only: rows come from ``datasets.variants`` (the same loader VLMEvalKit's dataset class uses);
``process_results`` hands each response on untouched, and the aggregation runs the pipeline VLMEvalKit's path
runs (``evaluation.evaluate``: cached concurrent judging, per-item table, metrics, validity flag, the same files).
The judge is chosen in the template's ``metadata`` (``judge``, ``judge_args``) and can be overridden per run with
the env vars ``MMSBPP_JUDGE`` / ``MMSBPP_JUDGE_ARGS`` (JSON), read once in :func:`judge_settings`.
"""

from __future__ import annotations

import hashlib
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

from .. import console, metrics
from ..datasets import order
from ..datasets.config import load_config
from ..datasets.release import Rows, resolve_root, rows_to_frame
from ..datasets.schema import COLUMNS
from ..datasets.source import DataSource, announce
from ..datasets.validate import DatasetError
from ..datasets.variants import decode_image, image_files, load_variant_source, resolve_image_refs, select_variant
from ..evaluation import ITEM_FIELDS, MAX_UNKNOWN_RATE, Evaluation, evaluate, render
from ..judges import Judge, check_judge_choice, make_judge
from ..paths import config_file
from ..report.lmms import write_model_record

log = logging.getLogger(__name__)

TEMPLATE = "task_configs/lmms_eval/_default_template_yaml"
# Every lmms-eval metric of the task is a column of metrics.summarize with the same name; the template declares all
# of them and process_results reports the ones of the judge in use (no AR under the refusal-only rule judge).
METRICS = ("CCR", "RR", "AR", "QS_HM", "NonRefusalRate", "CCR_NonRefusal")
JUDGE_ENV, JUDGE_ARGS_ENV = "MMSBPP_JUDGE", "MMSBPP_JUDGE_ARGS"
RECORD_FIELDS = (*ITEM_FIELDS, "question", "key_phrase")


# ---- docs ----------------------------------------------------------------------------------------------------
def _as_docs(variant: str, frame: pd.DataFrame, source: DataSource):
    import datasets

    # lmms-eval builds the docs before inference: the place to refuse a judge that cannot work (no key, no URL).
    settings = dict(judge_settings())
    check_judge_choice(settings.pop("model"), settings)
    console.unnest_weight_bars()  # an encoder loaded at the first request would draw its bar under the model's
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


def metric_names(refusal_only: bool) -> tuple[str, ...]:
    """The task's metrics under a judge: CCR / RR / AR / QS_HM, or, refusal-only, CCR_NonRefusal / RR /
    NonRefusalRate (metrics.py names)."""
    names = (metrics.ccr_name(refusal_only), "RR", metrics.safe_rate_name(refusal_only))
    return names if refusal_only else (*names, "QS_HM")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, dict[str, Any]]:
    """One record per item (the row, the dataset, the response; the image only for a judge that looks at it),
    under every metric name of the judge. Judging happens once per task, in the aggregation."""
    j = judge()
    record = {**{k: "" if doc.get(k) is None else str(doc[k]) for k in RECORD_FIELDS}, "dataset": doc.get("dataset")}
    record["prediction"] = results[0] if results else None
    record["data_source"] = doc.get("data_source")  # what the load read and detected (one per task)
    if j.wants_image:
        record.update({k: doc[k] for k in ("image", "image_path") if doc.get(k)})
    return {name: record for name in metric_names(j.refusal_only)}


# ---- aggregation ---------------------------------------------------------------------------------------------
# lmms-eval calls one aggregation per metric with the same records; the task is judged and written once, so that
# every metric reads the same judgements (a judge that fails on an item must not fail differently per metric).
_EVALUATED: dict[str, Evaluation] = {}


def overall(summary: pd.DataFrame, column: str) -> float:
    """Mean over modes of the per-mode category means (VLMEvalKit's headline numbers); NaN when any is missing."""
    return float(summary.loc[summary["category"] == metrics.ALL, column].mean(skipna=False))


def evaluated(records: list[dict[str, Any]], args: Any = None) -> Evaluation:
    """The shared pipeline over the task's records, writing ``<output_path>/mmsafetybenchpp/<dataset>_<judge>_*``
    (judge cache, items, score CSV and JSON), as VLMEvalKit's path writes them next to its predictions."""
    out = Path(getattr(args, "output_path", None) or ".") / "mmsafetybenchpp"
    frame = pd.DataFrame(records)
    stem = out / str(frame["dataset"].iloc[0])
    record = _data_source_record(frame)
    text = frame.drop(columns=[c for c in ("image", "image_path") if c in frame.columns])
    key = hashlib.sha256(f"{stem}\n{text.to_json()}".encode()).hexdigest()
    if key not in _EVALUATED:
        settings = judge_settings()
        j = judge()
        images = image_files(frame, Path(f"{stem}_judge_images")) if j.wants_image else None
        result = evaluate(
            frame,
            j,
            stem,
            nproc=int(settings.get("nproc") or 4),
            max_unknown_rate=float(settings.get("max_unknown_rate", MAX_UNKNOWN_RATE)),
            image_for=images,
            source=f"lmms-eval task {frame['dataset'].iloc[0]}",
            data_source=record,
        )
        if record is not None:
            Path(f"{stem}_data_source.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        run = console.lmms_run_dir(args)
        write_model_record(out, stem.name, run[1] if run else None, args)  # the files' names omit the model
        console.print_at_exit(_closing_block(stem.name, j, result, args))
        _EVALUATED[key] = result
    return _EVALUATED[key]


def _closing_block(variant: str, j: Judge, result: Evaluation, args: Any) -> str:
    """The table and the files, as ``run.py`` ends: lmms-eval prints its own results table after the aggregation,
    so this block is printed when the process ends (the predictions are in the items file)."""
    note = " (refusal-only: no QS)" if j.refusal_only else ""
    table = render(result.summary, result.result, "run the same lmms-eval command again")
    run = console.lmms_run_dir(args)
    bank, trace, memory = console.echosafe_files(run[0], run[1], variant) if run else (None, None, None)
    paths = {"predictions": result.paths["items"], "scores": result.paths["score"], "bank": bank, "trace": trace}
    return console.closing_block(f"MM-SafetyBench++ ({variant}), judge {j.name}{note}", table, paths, memory)


def _data_source_record(frame: pd.DataFrame) -> dict[str, Any] | None:
    """What the task's load read and detected: one record per task (a list would mean docs from several loads)."""
    sources = sorted({s for s in frame.get("data_source", pd.Series(dtype=object)).dropna() if s})
    if not sources:
        return None
    loaded = [json.loads(s) for s in sources]
    return {"recorded_at": "lmms-eval aggregation", "source": loaded[0] if len(loaded) == 1 else loaded}


def aggregate(records: list[dict[str, Any]], metric: str, args: Any = None) -> float:
    """Every lmms-eval metric of the task: one column of the shared evaluation's summary."""
    return overall(evaluated(records, args).summary, metric)


# One callable per metric name, as lmms-eval's metric_list needs; all of them are `aggregate`.
aggregate_CCR = partial(aggregate, metric="CCR")
aggregate_RR = partial(aggregate, metric="RR")
aggregate_AR = partial(aggregate, metric="AR")
aggregate_QS_HM = partial(aggregate, metric="QS_HM")
aggregate_NonRefusalRate = partial(aggregate, metric="NonRefusalRate")
aggregate_CCR_NonRefusal = partial(aggregate, metric="CCR_NonRefusal")

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
