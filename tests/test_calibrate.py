"""Judge calibration round trip: judge-sheet samples a judged run blind and stratified, a person fills it,
`agree ITEMS --human SHEET` reports agreement, Cohen's kappa and the judge's P/R against the person."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score

from vlmeval_echosafe.launcher import main
from vlmeval_echosafe.report.calibrate import allocate

NAME = "TinyQwen2VL_MMSafetyBenchPP_DemoMini_rule"


def _run(tmp: Path, n: int = 300) -> tuple[Path, pd.DataFrame]:
    """A judged run: items file + prediction file; the judge decision is wrong on every 7th row."""
    rng = np.random.default_rng(0)
    cats = ["Illegal_Activity", "Hate_Speech", "Fraud"]
    items = pd.DataFrame(
        {
            "index": [str(i) for i in range(n)],
            "pair_id": [i // 2 for i in range(n)],
            "category": rng.choice(cats, n, p=[0.6, 0.3, 0.1]),
            "mode": "Gen",
            "label": np.where(np.arange(n) % 2, "safe", "unsafe"),
        }
    )
    truth = np.where(items["label"] == "unsafe", np.where(rng.random(n) < 0.8, "refuse", "answer"), "answer")
    judge = truth.copy()
    judge[::7] = np.where(truth[::7] == "refuse", "answer", "refuse")
    items["decision"], items["score"], items["judge_error"] = judge, np.nan, ""
    items.loc[5, ["decision", "judge_error"]] = ["unknown", "empty prediction"]
    items["prediction"] = [f"response {i}" for i in range(n)]
    items.to_csv(tmp / f"{NAME}_items.csv", index=False)
    pred = items[["index", "category", "label"]].assign(question=[f"question {i}" for i in range(n)])
    pred.assign(prediction=items["prediction"]).to_csv(
        tmp / "TinyQwen2VL_MMSafetyBenchPP_DemoMini.tsv", sep="\t", index=False
    )
    return tmp / f"{NAME}_items.csv", items.assign(truth=truth)


def test_allocate_covers_every_stratum_then_shares_by_size():
    take = allocate({("a",): 90, ("b",): 9, ("c",): 1}, 20)
    assert take == {("a",): 17, ("b",): 2, ("c",): 1}
    assert allocate({("a",): 3, ("b",): 2}, 100) == {("a",): 3, ("b",): 2}
    assert sum(allocate({(i,): 1 for i in range(10)}, 4).values()) == 4


def test_sheet_is_blind_seeded_stratified_and_weighted(tmp_path):
    items_path, items = _run(tmp_path)
    out_a, out_b, out_c = (tmp_path / f"{x}.csv" for x in "abc")
    assert main(["judge-sheet", str(items_path), "-n", "40", "--seed", "1", "--out", str(out_a)]) == 0
    assert main(["judge-sheet", str(items_path), "-n", "40", "--seed", "1", "--out", str(out_b)]) == 0
    assert main(["judge-sheet", str(items_path), "-n", "40", "--seed", "2", "--out", str(out_c)]) == 0
    sheet = pd.read_csv(out_a, dtype={"index": str}, keep_default_na=False)
    assert out_a.read_bytes() == out_b.read_bytes() and out_a.read_bytes() != out_c.read_bytes()
    assert len(sheet) == 40 and sheet["index"].is_unique and "decision" not in sheet.columns
    assert (sheet["question"] == "question " + sheet["index"]).all()
    joined = sheet.merge(items[["index", "decision"]], on="index")
    strata = items.groupby(["category", "label", "decision"]).size()
    drawn = joined.groupby(["category", "label", "decision"]).size()
    assert set(drawn.index) == set(strata.index)  # every stratum, even the one-row 'unknown'
    assert joined["weight"].sum() == pytest.approx(len(items))  # weights re-weight the sample to the run


def test_agree_with_a_person_round_trip(tmp_path):
    items_path, items = _run(tmp_path)
    sheet_path = tmp_path / "sheet.csv"
    assert main(["judge-sheet", str(items_path), "-n", "60", "--seed", "0", "--out", str(sheet_path)]) == 0
    sheet = pd.read_csv(sheet_path, dtype={"index": str}, keep_default_na=False)
    truth = items.set_index("index")["truth"]
    sheet["human_decision"] = sheet["index"].map(truth)
    sheet.loc[3, "human_decision"] = "unclear"
    sheet.to_csv(sheet_path, index=False)
    out = tmp_path / "stats.json"
    assert main(["agree", str(items_path), "--human", str(sheet_path), "--json", str(out)]) == 0
    stats = json.loads(out.read_text())

    judged = sheet.merge(items[["index", "decision"]], on="index")
    keep = judged["human_decision"].isin(["refuse", "answer"]) & judged["decision"].isin(["refuse", "answer"])
    h, j = judged.loc[keep, "human_decision"], judged.loc[keep, "decision"]
    sample = stats["sample"]["overall"]
    assert stats["human_unclear"] == 1 and stats["judge_unknown"] == int((judged["decision"] == "unknown").sum())
    assert sample["rows"] == int(keep.sum())
    assert sample["cohen_kappa"] == pytest.approx(cohen_kappa_score(h, j))
    assert sample["precision"] == pytest.approx(precision_score(h, j, pos_label="refuse"))
    assert sample["recall"] == pytest.approx(recall_score(h, j, pos_label="refuse"))
    assert sample["agreement_pct"] == pytest.approx(100 * float((h == j).mean()))
    w = judged.loc[keep, "weight"]
    assert stats["run_weighted"]["overall"]["agreement_pct"] == pytest.approx(
        100 * float(((h == j) * w).sum() / w.sum())
    )
    safe = keep & (judged["label"] == "safe")
    assert stats["sample"]["safe"]["rows"] == int(safe.sum())


def test_agree_names_an_unfilled_row(tmp_path, capsys):
    items_path, _ = _run(tmp_path)
    sheet_path = tmp_path / "sheet.csv"
    main(["judge-sheet", str(items_path), "-n", "10", "--out", str(sheet_path)])
    assert main(["agree", str(items_path), "--human", str(sheet_path)]) == 2
    assert "row 1" in capsys.readouterr().err
