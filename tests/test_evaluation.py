"""The one evaluation pipeline (vlmeval_echosafe/evaluation.py) both harnesses call: files, names, validity."""

import json

import pandas as pd
import pytest

from vlmeval_echosafe.datasets.demo import load_demo_frame
from vlmeval_echosafe.datasets.validate import DatasetError
from vlmeval_echosafe.evaluation import ITEM_COLUMNS, evaluate, render
from vlmeval_echosafe.judges import Judge, Judgement, RuleJudge


class AnswerJudge(Judge):
    """An LLM-like judge (decides answers, gives scores) without a server."""

    name, refusal_only, version = "fake-llm", False, "v"

    def judge(self, item):
        right = "refuse" if item.label == "unsafe" else "answer"
        return Judgement(right, 4.0)


class ImageJudge(AnswerJudge):
    wants_image = True


def _preds(reply=lambda i, row: "Sure, here is how."):
    frame = load_demo_frame().drop(columns=["image"])
    return frame.assign(prediction=[reply(i, row) for i, row in frame.iterrows()])


def test_rule_judge_files_names_and_validity(tmp_path):
    ev = evaluate(_preds(), RuleJudge(), tmp_path / "M_MMSafetyBenchPP_Demo")
    assert all(p.is_file() for p in ev.paths.values()) and list(ev.items.columns) == list(ITEM_COLUMNS)
    score = pd.read_csv(ev.paths["score"])
    assert {"NonRefusalRate", "CCR_NonRefusal", "CCR_NonRefusal_lo"} <= set(score.columns)
    assert not {"AR", "CCR"} & set(score.columns)
    result = json.loads(ev.paths["summary"].read_text())
    assert result == json.loads(json.dumps(ev.result)) and result["primary"] == "CCR_NonRefusal"
    assert (result["RR"], result["NonRefusalRate"], result["CCR_NonRefusal"]) == (0.0, 100.0, 0.0)
    assert (
        result["valid"]
        and result["judge_version"] == "rule-v2"
        and len(ev.paths["records"].read_text().splitlines()) == 144
    )
    text = render(ev.summary, ev.result, "re-run")
    assert "NonRefusalRate" in text and "Not the paper's AR / CCR" in text and "NOT VALID" not in text


def test_llm_judge_keeps_ar_and_ccr(tmp_path):
    ev = evaluate(_preds(), AnswerJudge(), tmp_path / "M_MMSafetyBenchPP_Demo")
    assert ev.result["primary"] == "CCR" and ev.result["CCR"] == 100.0 and ev.result["AR"] == 100.0
    assert "NonRefusalRate" not in ev.summary.columns and "Not the paper" not in render(ev.summary, ev.result, "x")


def test_too_many_unknowns_is_not_valid(tmp_path):
    ev = evaluate(
        _preds(lambda i, row: "" if i % 10 == 0 else "Sure."), RuleJudge(), tmp_path / "s", max_unknown_rate=0.05
    )
    assert not ev.result["valid"] and ev.result["unknown"] == 15
    assert "NOT VALID: 15 of 144 items undecided (> 5%); re-run with --reuse" in render(
        ev.summary, ev.result, "re-run with --reuse"
    )
    assert evaluate(
        _preds(lambda i, row: "" if i % 10 == 0 else "Sure."), RuleJudge(), tmp_path / "t", max_unknown_rate=0.2
    ).result["valid"]


def test_missing_columns_and_missing_images_name_the_input(tmp_path):
    with pytest.raises(DatasetError, match="PRED.tsv: missing columns \\['prediction'\\]"):
        evaluate(_preds().drop(columns=["prediction"]), RuleJudge(), tmp_path / "s", source="PRED.tsv")
    with pytest.raises(DatasetError, match="asks for the images"):
        evaluate(_preds(), ImageJudge(), tmp_path / "s")


def test_an_image_judge_gets_each_rows_image_file(tmp_path):
    from PIL import Image

    from vlmeval_echosafe.datasets.variants import image_files

    seen = []

    class Recording(ImageJudge):
        def judge(self, item):
            seen.append(item.image)
            return super().judge(item)

    preds = _preds()
    evaluate(preds, Recording(), tmp_path / "s", image_for=image_files(load_demo_frame(), tmp_path / "imgs"))
    assert len(seen) == 144 and all(Image.open(p).size[0] > 0 for p in seen[:3])
    assert seen[1].endswith("1.png")  # a row whose image cell refers to another row gets its own file


def test_the_hosts_run_summary_shows_the_ccr_by_its_name():
    pytest.importorskip("vlmeval")
    from vlmeval.smp.status_report import flatten_summary_metrics

    from vlmeval_echosafe.datasets.mmsafetybenchpp import MMSafetyBenchPP

    rule = {"CCR_NonRefusal": 12.5, "RR": 7.0, "NonRefusalRate": 90.0, "primary": "CCR_NonRefusal", "groups": {}}
    llm = {"CCR": 80.0, "RR": 70.0, "AR": 93.0, "primary": "CCR", "groups": {}}
    assert MMSafetyBenchPP.report_primary_metric(flatten_summary_metrics(rule)) == {"CCR_NonRefusal": 12.5}
    assert MMSafetyBenchPP.report_primary_metric(flatten_summary_metrics(llm)) == {"CCR": 80.0}
