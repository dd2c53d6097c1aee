"""The lmms-eval task glue (vlmeval_echosafe/lmms/task.py) without lmms-eval: docs, judging, one aggregation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("datasets", reason="the lmms-eval task functions build `datasets.Dataset` docs")

from test_datasets import release_dir  # noqa: E402, F401  (fixture: a miniature release in a temp folder)

from vlmeval_echosafe import metrics  # noqa: E402
from vlmeval_echosafe.datasets.demo import load_demo_frame  # noqa: E402
from vlmeval_echosafe.datasets.validate import DatasetError  # noqa: E402
from vlmeval_echosafe.judges import rule_decision  # noqa: E402
from vlmeval_echosafe.lmms import task  # noqa: E402


@pytest.fixture()
def rule_judge(monkeypatch):
    monkeypatch.setenv(task.JUDGE_ENV, "rule")
    monkeypatch.delenv(task.JUDGE_ARGS_ENV, raising=False)
    task.judge_settings.cache_clear()
    task.judge.cache_clear()
    task._EVALUATED.clear()
    yield
    task.judge_settings.cache_clear()
    task.judge.cache_clear()
    task._EVALUATED.clear()


def _shipped_as_read() -> dict[str, list]:
    """The shipped TSV the way lmms-eval's csv builder hands it over (index as int)."""
    frame = load_demo_frame()
    return {c: (frame[c].astype(int).tolist() if c == "index" else frame[c].tolist()) for c in frame.columns}


def test_demo_docs_resolve_shared_images_and_carry_the_variant():
    docs = task.demo(_shipped_as_read())
    assert len(docs) == 144 and set(docs["dataset"]) == {"MMSafetyBenchPP_Demo"}
    assert all(len(img) > 64 for img in docs["image"])  # every row holds its own image, no row references
    assert task.doc_to_visual(docs[1])[0].mode == "RGB"
    assert task.doc_to_text(docs[0]) == docs[0]["question"]


def test_data_source_travels_with_the_docs_to_the_results(rule_judge, tmp_path):
    """The load's record rides on every doc and the CCR aggregation writes it beside the score table."""
    import json

    docs = task.demo_mini(_shipped_as_read())
    assert json.loads(docs[0]["data_source"])["kind"] == "demo"
    records = [task.process_results(doc, ["I'm sorry, I can't."])["CCR_NonRefusal"] for doc in docs]

    class Args:
        output_path = str(tmp_path)

    task.aggregate(records, metric="CCR_NonRefusal", args=Args())
    written = json.loads((tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_DemoMini_data_source.json").read_text())
    assert written["recorded_at"] == "lmms-eval aggregation" and written["source"]["rows"] == 12
    items = pd.read_csv(tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_DemoMini_rule_items.csv")
    assert "data_source" not in items.columns and len(items) == 12


def test_demo_mini_keeps_the_vlmeval_variant_rows():
    docs = task.demo_mini(_shipped_as_read())
    assert len(docs) == 12 and set(docs["mode"]) == {"Gen"} and len(set(docs["category"])) == 6


def test_demo_docs_refuse_a_different_file():
    read = _shipped_as_read()
    read["label"] = list(reversed(read["label"]))
    with pytest.raises(DatasetError, match="does not match"):
        task.demo(read)


def test_judge_settings_template_then_env(monkeypatch):
    monkeypatch.delenv(task.JUDGE_ENV, raising=False)
    monkeypatch.delenv(task.JUDGE_ARGS_ENV, raising=False)
    task.judge_settings.cache_clear()
    assert task.judge_settings() == {"model": "rule"}
    monkeypatch.setenv(task.JUDGE_ENV, "gpt-5-mini")
    monkeypatch.setenv(task.JUDGE_ARGS_ENV, '{"api_base": "http://127.0.0.1:9/v1"}')
    task.judge_settings.cache_clear()
    assert task.judge_settings() == {"model": "gpt-5-mini", "api_base": "http://127.0.0.1:9/v1"}
    task.judge_settings.cache_clear()


class _Args:
    def __init__(self, out):
        self.output_path = str(out)


def _records(replies, frame=None):
    frame = load_demo_frame() if frame is None else frame
    return [
        task.process_results({**row.to_dict(), "dataset": "MMSafetyBenchPP_Demo"}, [replies(i, row)])["RR"]
        for i, row in frame.iterrows()
    ]


def test_process_results_only_translates(rule_judge):
    doc = {
        "index": 0,
        "pair_id": "p",
        "category": "Fraud",
        "mode": "Gen",
        "label": "unsafe",
        "question": "q",
        "key_phrase": "k",
        "dataset": "MMSafetyBenchPP_Demo",
    }
    out = task.process_results(doc, [""])
    assert set(out) == {"CCR_NonRefusal", "RR", "NonRefusalRate"} == set(task.metric_names(True))
    assert set(task.metric_names(False)) == {"CCR", "RR", "AR", "QS_HM"} and set(task.METRICS) >= set(out)
    rec = out["RR"]
    assert rec["index"] == "0" and rec["prediction"] == "" and "decision" not in rec and "image" not in rec


def test_one_shared_evaluation_for_every_metric(rule_judge, tmp_path, monkeypatch):
    """Judged once per task through evaluation.evaluate (judge cache, validity), whatever the number of metrics."""
    replies = {"unsafe": "I'm sorry, but I can't help with that.", "safe": "Sure, here is how."}
    records = _records(lambda i, row: replies[row["label"]] if i % 5 else "Sure.")
    table = pd.DataFrame(records).assign(score=float("nan"))
    table["decision"] = [rule_decision(p) for p in table["prediction"]]
    summary = metrics.summarize(table, refusal_only=True)
    judge, calls = task.judge(), []
    original = judge.judge
    monkeypatch.setattr(judge, "judge", lambda item: calls.append(item.index) or original(item))
    args = _Args(tmp_path)
    for name in task.metric_names(True):
        got = task.aggregate(records, metric=name, args=args)
        want = summary.loc[summary["category"] == metrics.ALL, name].mean(skipna=False)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    assert len(calls) == len(records)  # one judgement per item, not one per metric
    stem = tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_Demo_rule"
    written = pd.read_csv(f"{stem}_score.csv")
    assert {"CCR_NonRefusal", "NonRefusalRate"} <= set(written.columns) and "AR" not in written.columns
    result = json.loads(Path(f"{stem}_score.json").read_text())
    assert result["valid"] and result["items"] == 144 and result["primary"] == "CCR_NonRefusal"
    assert len(Path(f"{stem}_judge.jsonl").read_text().splitlines()) == 144  # the same cache file as VLMEvalKit's
    assert task.aggregate_CCR_NonRefusal.keywords == {"metric": "CCR_NonRefusal"}


def test_unknowns_make_the_task_result_not_valid(rule_judge, tmp_path, monkeypatch):
    records = _records(lambda i, row: "" if i % 4 == 0 else "Sure, here is how.")  # 25% empty predictions
    closing: list[str] = []  # what the task prints when lmms-eval ends, after lmms-eval's own table
    monkeypatch.setattr(task.console, "print_at_exit", closing.append)
    task.aggregate(records, metric="RR", args=_Args(tmp_path))
    printed = "\n".join(closing)
    assert "NOT VALID: 36 of 144 items undecided" in printed and "NonRefusalRate" in printed
    stem = task.console.shown(tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_Demo_rule")
    assert printed.splitlines()[-2:] == [f"predictions: {stem}_items.csv", f"scores:      {stem}_score.csv"]
    result = json.loads((tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_Demo_rule_score.json").read_text())
    assert result["valid"] is False and result["unknown"] == 36
    items = pd.read_csv(tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_Demo_rule_items.csv", keep_default_na=False)
    assert set(items.loc[items["prediction"] == "", "judge_error"]) == {"empty prediction"}


def test_release_docs_equal_the_vlmeval_variant(release_dir):  # noqa: F811 (the imported fixture)
    """The hub rows as lmms-eval's json builder loads them give the rows VLMEvalKit's MMSafetyBenchPP_Gen has."""
    import json

    import datasets

    from vlmeval_echosafe.datasets.variants import load_variant

    loaded = datasets.load_dataset(
        "json",
        data_files=str(release_dir / "test.jsonl"),
        split="train",
        cache_dir=str(release_dir / "hf_cache"),
    )
    docs = task.gen(loaded).to_pandas()
    want = load_variant("MMSafetyBenchPP_Gen")
    cols = ["index", "pair_id", "category", "mode", "label", "question", "image_path"]
    pd.testing.assert_frame_equal(docs[cols], want[cols].reset_index(drop=True))
    assert set(docs["dataset"]) == {"MMSafetyBenchPP_Gen"}
    assert {json.loads(s)["linking"] for s in docs["data_source"]} == {"id"}  # the miniature release has ids
    assert task.doc_to_visual(docs.iloc[0].to_dict())[0].size == (16, 16)
    assert len(task.genocr(loaded)) == 8


def test_an_unconfigured_api_judge_stops_before_inference(monkeypatch):
    from vlmeval_echosafe.judges import JudgeConfigError

    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "LOCAL_LLM", task.JUDGE_ARGS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(task.JUDGE_ENV, "gpt-5-mini")
    task.judge_settings.cache_clear()
    try:
        with pytest.raises(JudgeConfigError, match="not configured"):
            task.demo_mini(_shipped_as_read())
    finally:
        task.judge_settings.cache_clear()
