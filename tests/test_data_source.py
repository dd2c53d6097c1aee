"""What a load detected is written next to the results, and a resumed run cannot mix data read differently."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
from release_layout import write_release

from vlmeval_echosafe.datasets.schema import COLUMNS
from vlmeval_echosafe.datasets.source import DataSource, record_evaluation, record_inference, record_path
from vlmeval_echosafe.datasets.validate import DatasetError

SOURCE = DataSource(
    kind="release",
    rows=8,
    row_files=["/data/test.jsonl"],
    linking="position",
    linking_reason="auto",
    question_style="changed",
    question_fields={"Gen": "Changed Question", "GenOCR": "Changed Question"},
    images="files",
)


def test_record_path_sits_beside_the_predictions(tmp_path):
    assert record_path(tmp_path / "M_MMSafetyBenchPP.tsv") == tmp_path / "M_MMSafetyBenchPP_data_source.json"


def test_resume_with_the_same_reading_rewrites_the_record(tmp_path):
    path = tmp_path / "r.json"
    record_inference(SOURCE, path, resuming=False)
    record_inference(replace(SOURCE, root="/moved/elsewhere"), path, resuming=True)  # where it lies is not identity
    saved = json.loads(path.read_text())
    assert saved["recorded_at"] == "inference" and saved["source"]["root"] == "/moved/elsewhere"


@pytest.mark.parametrize(
    "change",
    [
        {"question_style": "rephrased"},
        {"linking": "id"},
        {"rows": 6},
        {"question_fields": {"Gen": "Rephrased Question(SD)", "GenOCR": "Changed Question"}},
    ],
)
def test_resume_with_data_read_differently_is_refused(tmp_path, change):
    path = tmp_path / "r.json"
    record_inference(SOURCE, path, resuming=False)
    key = next(iter(change))
    with pytest.raises(DatasetError, match=f"read differently \\({key}: "):
        record_inference(replace(SOURCE, **change), path, resuming=True)
    record_inference(replace(SOURCE, **change), path, resuming=False)  # a fresh start may change anything


def test_manifest_hashes_compared_only_when_both_runs_had_one(tmp_path):
    path = tmp_path / "r.json"
    with_manifest = replace(SOURCE, manifest={"path": "m", "sha256": "a" * 64, "passed": True})
    record_inference(SOURCE, path, resuming=False)
    record_inference(with_manifest, path, resuming=True)  # checked after the run began: fine
    changed = replace(SOURCE, manifest={"path": "m", "sha256": "b" * 64, "passed": True})
    with pytest.raises(DatasetError, match="manifest_sha256"):
        record_inference(changed, path, resuming=True)


def test_evaluation_keeps_the_inference_record(tmp_path):
    pred = tmp_path / "M_D.tsv"
    record_inference(SOURCE, record_path(pred), resuming=False)
    assert record_evaluation(replace(SOURCE, rows=1), pred)["source"]["rows"] == 8
    other = tmp_path / "N_D.tsv"
    assert record_evaluation(None, other) is None and not record_path(other).exists()
    assert record_evaluation(SOURCE, other)["recorded_at"] == "evaluation (no record from inference)"


def test_launcher_records_before_inference_and_refuses_a_mixed_resume(tmp_path):
    from vlmeval_echosafe.vlmevalkit.patches import record_data_sources

    calls = []
    module = SimpleNamespace(infer_data_job=lambda model, work_dir, model_name, dataset, **kw: calls.append(model))
    record_data_sources(module)
    dataset = SimpleNamespace(dataset_name="MMSafetyBenchPP", data_source=SOURCE)
    module.infer_data_job("m", work_dir=str(tmp_path), model_name="M", dataset=dataset, verbose=False)
    record = tmp_path / "M_MMSafetyBenchPP_data_source.json"
    assert calls == ["m"] and json.loads(record.read_text())["source"]["linking"] == "position"
    (tmp_path / "01_MMSafetyBenchPP.pkl").write_bytes(b"")  # the host's checkpoint: a resumed run
    dataset.data_source = replace(SOURCE, question_style="rephrased")
    with pytest.raises(DatasetError, match="question_style"):
        module.infer_data_job("m", work_dir=str(tmp_path), model_name="M", dataset=dataset)
    assert calls == ["m"]
    module.infer_data_job("m", work_dir=str(tmp_path), model_name="M", dataset=SimpleNamespace(dataset_name="X"))
    assert calls == ["m", "m"]  # other datasets pass straight through


def test_dataset_class_loads_release_and_evaluate_writes_the_record(tmp_path, monkeypatch):
    """Through VLMEvalKit's dataset class: the full-scale release folder, then evaluation of a prediction file."""
    release = write_release(tmp_path / "mmsbpp")
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(release))
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))
    (tmp_path / "LMUData").mkdir()
    from vlmeval_echosafe.datasets.mmsafetybenchpp import MMSafetyBenchPP
    from vlmeval_echosafe.vlmevalkit import registry

    registry.register()
    dataset = MMSafetyBenchPP("MMSafetyBenchPP")
    assert len(dataset) == 2844 and dataset.data_source.linking == "position"
    assert dataset.data.groupby(["mode", "label"]).size().eq(711).all()
    prompt = dataset.build_prompt(dataset.data.iloc[0])
    assert prompt[0]["value"].endswith("images/Gen/Illegal_Activity/0.png")
    assert prompt[1]["value"] == dataset.data.iloc[0]["question"]
    pred = tmp_path / "out" / "M_MMSafetyBenchPP.tsv"
    pred.parent.mkdir()
    frame = dataset.data[[c for c in COLUMNS if c != "image"]].assign(prediction="Sorry, I can't help with that.")
    frame.to_csv(pred, sep="\t", index=False)
    result = dataset.evaluate(str(pred), model="rule")
    assert result["items"] == 2844 and result["data_source"]["source"]["rows"] == 2844
    written = json.loads(record_path(pred).read_text())
    assert written["recorded_at"].startswith("evaluation") and written["source"]["question_style"] == "changed"
    summary = json.loads((tmp_path / "out" / "M_MMSafetyBenchPP_rule_score.json").read_text())
    assert summary["data_source"] == written
    assert pd.read_csv(tmp_path / "out" / "M_MMSafetyBenchPP_rule_items.csv").shape[0] == 2844
