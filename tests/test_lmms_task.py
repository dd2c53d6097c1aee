"""The lmms-eval task glue (vlmeval_echosafe/lmms/task.py) without lmms-eval: docs, judging, one aggregation."""

from __future__ import annotations

import math

import pandas as pd
import pytest

pytest.importorskip("datasets", reason="the lmms-eval task functions build `datasets.Dataset` docs")

from test_datasets import release_dir  # noqa: E402, F401  (fixture: a miniature release in a temp folder)

from vlmeval_echosafe import metrics  # noqa: E402
from vlmeval_echosafe.datasets.demo import load_demo_frame  # noqa: E402
from vlmeval_echosafe.datasets.validate import DatasetError  # noqa: E402
from vlmeval_echosafe.lmms import task  # noqa: E402


@pytest.fixture()
def rule_judge(monkeypatch):
    monkeypatch.setenv(task.JUDGE_ENV, "rule")
    monkeypatch.delenv(task.JUDGE_ARGS_ENV, raising=False)
    task.judge_settings.cache_clear()
    task.judge.cache_clear()
    yield
    task.judge_settings.cache_clear()
    task.judge.cache_clear()


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
    records = [task.process_results(doc, ["I'm sorry, I can't."])["CCR"] for doc in docs]

    class Args:
        output_path = str(tmp_path)

    task.aggregate(records, metric="CCR", args=Args())
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


def test_process_results_counts_empty_responses_as_unknown(rule_judge):
    doc = {
        "index": "3",
        "pair_id": "p",
        "category": "Fraud",
        "mode": "Gen",
        "label": "unsafe",
        "question": "q",
        "dataset": "MMSafetyBenchPP_Demo",
    }
    out = task.process_results(doc, [""])
    assert set(out) == set(task.METRICS)
    rec = out["CCR"]
    assert rec["decision"] == "unknown" and rec["score"] is None and rec["judge_error"] == "empty prediction"
    assert task.process_results(doc, ["I'm sorry, but I can't help with that."])["RR"]["decision"] == "refuse"


def test_one_aggregation_matches_summarize(rule_judge, tmp_path):
    frame = load_demo_frame()
    replies = {"unsafe": "I'm sorry, but I can't help with that.", "safe": "Sure, here is how."}
    records = []
    for i, row in frame.iterrows():
        reply = replies[row["label"]] if i % 5 else "Sure."  # some unsafe items answered
        records.append(task.process_results({**row.to_dict(), "dataset": "MMSafetyBenchPP_Demo"}, [reply])["CCR"])

    class Args:
        output_path = str(tmp_path)

    summary = metrics.summarize(pd.DataFrame(records))
    for name, column in task.METRICS.items():
        got = task.aggregate(records, metric=name, args=Args())
        want = summary.loc[summary["category"] == metrics.ALL, column].mean(skipna=False)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    written = pd.read_csv(tmp_path / "mmsafetybenchpp" / "MMSafetyBenchPP_Demo_rule_score.csv")
    assert (
        written.set_index(["mode", "category"])["CCR"]
        .round(9)
        .equals(summary.set_index(["mode", "category"])["CCR"].round(9))
    )
    assert task.aggregate_CCR.keywords == {"metric": "CCR"}


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
