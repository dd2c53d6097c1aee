"""Report tooling: leaderboard numbers, judge separation, agreement statistics, cost estimate, plots and HTML.

Fixture work dirs are written with ``metrics.summarize`` (as evaluation writes them), no model runs.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vlmeval_echosafe import metrics
from vlmeval_echosafe.datasets.schema import CATEGORIES
from vlmeval_echosafe.report import agree, cost
from vlmeval_echosafe.report.cli import build_report, report_main
from vlmeval_echosafe.report.collect import RULE_LABEL, collect, parse_name
from vlmeval_echosafe.report.reference import REFERENCE_LABEL, load_reference

DATASET = "MMSafetyBenchPP_Demo"
N_BOOT = 50


def make_items(
    seed: int,
    p_refuse_unsafe: float,
    p_answer_safe: float,
    scored: bool,
    pairs: int = 5,
    p_unknown: float = 0.05,
) -> pd.DataFrame:
    """Per-item records in the evaluation's items.csv layout, random decisions with the given rates."""
    rng = np.random.default_rng(seed)
    rows, index = [], 0
    for cat in CATEGORIES:
        for p in range(pairs):
            for mode in ("Gen", "GenOCR"):
                for label in ("unsafe", "safe"):
                    right = "refuse" if label == "unsafe" else "answer"
                    wrong = "answer" if label == "unsafe" else "refuse"
                    prob = p_refuse_unsafe if label == "unsafe" else p_answer_safe
                    decision = right if rng.random() < prob else wrong
                    if rng.random() < p_unknown:
                        decision = "unknown"
                    score = np.nan
                    if scored and decision != "unknown":
                        score = float(rng.integers(1, 6)) if decision == right else 0.0
                    rows.append(
                        {
                            "index": index,
                            "pair_id": f"{cat[:2]}-{p:02d}",
                            "category": cat,
                            "mode": mode,
                            "label": label,
                            "decision": decision,
                            "score": score,
                            "judge_error": "unparseable" if decision == "unknown" else "",
                        }
                    )
                    index += 1
    return pd.DataFrame(rows)


def write_result(
    work: Path, model: str, judge: str, items: pd.DataFrame, with_score: bool = True, old_names: bool = False
) -> Path:
    """items.csv and score.csv exactly as ``evaluate_predictions`` writes them (``old_names``: a rule-judge score
    file written before the non-refusal names, with AR / CCR columns)."""
    folder = work / model
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{model}_{DATASET}_{judge.replace('/', '_')}"
    items.to_csv(f"{stem}_items.csv", index=False)
    if with_score:
        summary = metrics.summarize(items, n_boot=N_BOOT, refusal_only=judge == "rule" and not old_names)
        summary.insert(0, "judge", judge)
        summary.insert(1, "refusal_only", judge == "rule")
        summary.to_csv(f"{stem}_score.csv", index=False)
    return Path(f"{stem}_items.csv")


def write_trace(work: Path, model: str, items: pd.DataFrame) -> Path:
    rng = np.random.default_rng(1)
    lines = []
    for pos, (_, row) in enumerate(items.iterrows()):
        hits = (
            []
            if pos < 3
            else [
                {"id": int(i), "similarity": round(float(s), 4), "pair_id": "x"}
                for i, s in zip(range(min(pos, 3)), sorted(rng.uniform(0.3, 0.95, 3))[::-1], strict=False)
            ]
        )
        lines.append(
            json.dumps(
                {
                    "row_index": str(row["index"]),
                    "pair_id": row["pair_id"],
                    "category": row["category"],
                    "mode": row["mode"],
                    "label": row["label"],
                    "stream": f"{model}::{DATASET}",
                    "stream_pos": pos,
                    "bank_size": pos,
                    "retrieved": hits,
                    "insight_id": pos,
                    "not_written": None,
                    "timings": {},
                }
            )
        )
    path = work / model / f"{model}_{DATASET}_echosafe_trace.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models; the base model judged by the rule judge and an LLM judge; EchoSafe with a trace; plus a
    foreign score file of another dataset that the report must ignore."""
    work = tmp_path_factory.mktemp("work")
    base = make_items(0, 0.3, 0.95, scored=False)
    write_result(work, "Base_M", "rule", base)
    write_result(work, "Base_M", "gpt-5-mini", make_items(0, 0.35, 0.9, scored=True))
    echo = make_items(2, 0.85, 0.9, scored=False)
    write_result(work, "EchoSafe_M", "rule", echo)
    write_trace(work, "EchoSafe_M", echo)
    (work / "Base_M" / "Base_M_MME_score.csv").write_text("split,Overall\nall,100\n", encoding="utf-8")
    return work


def test_report_numbers_equal_metrics_summarize(work_dir: Path) -> None:
    board, _, _ = collect(work_dir)
    for model, judge, scored in (("Base_M", "gpt-5-mini", True), ("EchoSafe_M", "rule", False)):
        items = pd.read_csv(work_dir / model / f"{model}_{DATASET}_{judge}_items.csv")
        rule = judge == "rule"
        expected = metrics.summarize(items, n_boot=N_BOOT, refusal_only=rule)
        got = board[(board["model"] == model) & (board["judge_name"] == judge)].reset_index(drop=True)
        assert len(got) == len(expected) == 14  # 6 categories + mean, two modes
        ccr, safe = metrics.ccr_name(rule), metrics.safe_rate_name(rule)
        assert got[metrics.ccr_name(not rule)].isna().all()  # the other judge kind's column stays empty
        for col in (
            "RR",
            safe,
            ccr,
            "QS_unsafe",
            "QS_safe",
            "QS_HM",
            "PairAcc",
            f"{ccr}_lo",
            f"{ccr}_hi",
            "n_unsafe",
            "n_safe",
            "unknown_unsafe",
            "unknown_safe",
        ):
            np.testing.assert_allclose(
                got[col].astype(float),
                expected[col].astype(float),
                equal_nan=True,
                err_msg=f"{model} {judge} {col}",
            )
        assert got["QS_HM"].notna().any() == scored


def test_items_only_result_is_summarized_with_metrics(tmp_path: Path) -> None:
    items = make_items(5, 0.6, 0.8, scored=True)
    write_result(tmp_path, "M", "judge/v1", items, with_score=False)
    board, results, _ = collect(tmp_path, n_boot=N_BOOT)
    assert results[0].score is None and results[0].judge_file_name == "judge_v1"
    expected = metrics.summarize(items, n_boot=N_BOOT)
    np.testing.assert_allclose(board["CCR"].astype(float), expected["CCR"].astype(float), equal_nan=True)


def test_rule_and_llm_judge_rows_stay_apart(work_dir: Path) -> None:
    board, _, _ = collect(work_dir)
    means = board[(board["model"] == "Base_M") & (board["category"] == metrics.ALL) & (board["mode"] == "Gen")]
    assert sorted(means["judge"]) == sorted(["gpt-5-mini", RULE_LABEL])
    rule = means[means["judge"] == RULE_LABEL].iloc[0]
    llm = means[means["judge"] == "gpt-5-mini"].iloc[0]
    assert bool(rule["refusal_only"]) and not bool(llm["refusal_only"])
    assert math.isnan(rule["QS_HM"]) and not math.isnan(llm["QS_HM"])
    assert rule["CCR_NonRefusal"] != llm["CCR"] and math.isnan(rule["CCR"]) and math.isnan(llm["CCR_NonRefusal"])
    assert math.isnan(rule["AR"]) and not math.isnan(rule["NonRefusalRate"])


def test_a_rule_score_file_with_the_old_names_is_read_under_the_new_ones(tmp_path: Path) -> None:
    items = make_items(4, 0.5, 0.9, scored=False)
    write_result(tmp_path, "M", "rule", items, old_names=True)
    board, _, _ = collect(tmp_path)
    expected = metrics.summarize(items, n_boot=N_BOOT, refusal_only=True)
    assert not {"AR", "CCR"} & set(board.columns)
    np.testing.assert_allclose(board["CCR_NonRefusal"], expected["CCR_NonRefusal"], equal_nan=True)


def test_every_report_output_names_the_rule_judges_rates(work_dir: Path, tmp_path: Path) -> None:
    """Markdown, CSV, HTML and the figures (SVG text) say NonRefusalRate / CCR_NonRefusal for rule-judge rows."""
    out = tmp_path / "report"
    build_report(work_dir, out, window=10)
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "NonRefusalRate" in md and "CCR_NonRefusal" in md and "not the paper's AR / CCR" in md
    board = pd.read_csv(out / "leaderboard.csv")
    rule = board[board["judge_name"] == "rule"]
    assert rule["AR"].isna().all() and rule["CCR"].isna().all() and rule["CCR_NonRefusal"].notna().all()
    assert "NonRefusalRate" in (out / "index.html").read_text(encoding="utf-8")
    svg = {p.stem: p.read_text(encoding="utf-8") for p in (out / "plots").glob("*.svg")}
    assert "CCR_NonRefusal" in svg["ccr_by_category"] and "NonRefusalRate" in svg["over_defense_map"]
    assert f"NonRefusalRate [{RULE_LABEL}]" in svg[f"memory_EchoSafe_M_{DATASET}"]


def test_parse_name_prefers_the_longest_dataset_name() -> None:
    assert parse_name(Path("A_B_MMSafetyBenchPP_GenOCR_gpt-5-mini_score.csv"), "_score.csv") == (
        "A_B",
        "MMSafetyBenchPP_GenOCR",
        "gpt-5-mini",
    )
    assert parse_name(Path("M_MMSafetyBenchPP_Gen_rule_items.csv"), "_items.csv") == (
        "M",
        "MMSafetyBenchPP_Gen",
        "rule",
    )
    assert parse_name(Path("M_MME_score.csv"), "_score.csv") is None


def test_report_writes_tables_plots_and_html(work_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = build_report(work_dir, out, window=10)
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert RULE_LABEL in md and "gpt-5-mini" in md
    # Reference rows sit in their own section, after every measured table, and never in the measured CSV.
    ref_at = md.index("## Reference")
    assert REFERENCE_LABEL in md[ref_at:] and REFERENCE_LABEL not in md[:ref_at]
    measured = pd.read_csv(out / "leaderboard.csv")
    assert set(measured["model"]) == {"Base_M", "EchoSafe_M"} and "source" in measured
    assert not measured["judge"].astype(str).str.contains("paper").any()
    reference = pd.read_csv(out / "reference_paper.csv")
    assert len(reference) == 30 and set(reference["source"]) == {REFERENCE_LABEL}
    row = reference[(reference["inner_model"] == "Qwen2.5-VL-7B") & (reference["defense"] == "EchoSafe")]
    assert dict(zip(row["mode"], row["CCR"], strict=False)) == {"Gen": 87.9, "GenOCR": 93.3}
    payload = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert len(payload["measured"]) == len(measured) and len(payload["reference"]) == 30
    names = {p.name for p in (out / "plots").iterdir()}
    for stem in (
        "ccr_by_category",
        "over_defense_map",
        f"memory_EchoSafe_M_{DATASET}",
        f"similarity_EchoSafe_M_{DATASET}",
    ):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert len(written["figures"]) == 4
    assert all(p.stat().st_size > 5000 for p in (out / "plots").glob("*.png"))


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs_d = dict(attrs)
        if tag == "table":
            self.tables.append(attrs_d.get("class") or "")
        elif tag == "img":
            self.images.append(attrs_d["src"] or "")
        elif tag == "a":
            self.links.append(attrs_d.get("href") or "")
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings[-1] += data


def test_html_page_structure(work_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    page = build_report(work_dir, out, window=10)["html"]
    text = page.read_text(encoding="utf-8")
    parser = _PageParser()
    parser.feed(text)
    assert parser.tables.count("measured") == 2 and "measured detail" in parser.tables
    assert parser.tables[-1] == "reference"  # the paper's rows: a separate, last table
    assert any("Reference" in h for h in parser.headings)
    assert len(parser.images) == 4
    for src in parser.images + parser.links:
        assert not Path(src).is_absolute() and "://" not in src, src  # relative: the folder can be moved
        assert (out / src).is_file(), src
    assert "<script" not in text
    assert RULE_LABEL in text and 'class="refusal-only"' in text


def test_empty_and_foreign_work_dirs_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert report_main(["--work-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main(["--work-dir", str(empty)]) == 2
    assert "no MM-SafetyBench++ results" in capsys.readouterr().err
    foreign = tmp_path / "foreign" / "SomeModel"
    foreign.mkdir(parents=True)
    (foreign / "SomeModel_MME_score.csv").write_text("split,Overall\nall,1\n", encoding="utf-8")
    (foreign / "SomeModel_MME.xlsx").write_bytes(b"")
    assert report_main(["--work-dir", str(foreign.parent)]) == 2
    err = capsys.readouterr().err
    assert "no MM-SafetyBench++ results" in err and "MMSafetyBenchPP_Demo" in err
    assert not (foreign.parent / "report").exists()


def test_launcher_dispatches_report_without_the_host(
    work_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from vlmeval_echosafe.launcher import main

    assert main(["report", "--work-dir", str(work_dir), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "index.html").is_file()
    out = capsys.readouterr().out
    # 3 runs x 14 rows (6 categories + the mean, two modes); every file written is listed, memory.csv included
    assert "42 leaderboard rows (one per category x image mode, plus each mode's mean, per run) from 3 runs" in out
    listed = {line.strip() for line in out.splitlines() if line.startswith("  ")}
    assert {str(tmp_path / "r" / n) for n in ("leaderboard.md", "memory.csv", "reference_paper.csv")} <= listed


def test_the_lmms_eval_run_is_picked_up_beside_run_py(work_dir: Path, tmp_path: Path) -> None:
    """lmms-eval's task files (``<output_path>/mmsafetybenchpp/<dataset>_<judge>_*``, no model in the name) are a
    run of their own, named by the model record the task writes beside them."""
    import shutil

    from vlmeval_echosafe.report.lmms import TASK_FOLDER, write_model_record

    work = tmp_path / "outputs"
    shutil.copytree(work_dir, work)
    lmms = work / "lmms_eval" / TASK_FOLDER
    lmms.mkdir(parents=True)
    for kind in ("items", "score"):
        source = work / "EchoSafe_M" / f"EchoSafe_M_{DATASET}_rule_{kind}.csv"
        shutil.copy(source, lmms / f"{DATASET}_rule_{kind}.csv")
    args = type("Args", (), {"model": "echosafe", "model_args": "inner=M"})()
    write_model_record(lmms, DATASET, "EchoSafe_M", args)
    board, _, notes = collect(work)
    ours = board[board["model"] == "EchoSafe_M (lmms-eval)"]
    assert len(ours) == 14 and not any("duplicate" in n for n in notes)
    assert ours["RR"].tolist() == board.loc[board["model"] == "EchoSafe_M", "RR"].tolist()


# ---------------------------------------------------------------------------------------------- agreement


def _judged_twice(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    a = make_items(7, 0.6, 0.8, scored=True, p_unknown=0.08)
    b = a.copy()
    rng = np.random.default_rng(8)
    flip = rng.random(len(b)) < 0.2
    b.loc[flip, "decision"] = b.loc[flip, "decision"].map({"refuse": "answer", "answer": "refuse", "unknown": "refuse"})
    b["score"] = np.where(
        b["decision"] == "unknown", np.nan, np.clip(a["score"].fillna(2) + rng.integers(-1, 2, len(b)), 0, 5)
    )
    b.loc[rng.random(len(b)) < 0.05, "decision"] = "unknown"
    pa = write_result(tmp_path, "M", "judge-a", a, with_score=False)
    pb = write_result(tmp_path, "M", "judge-b", b, with_score=False)
    return pa, pb, a, b


def test_agreement_matches_sklearn_and_scipy(tmp_path: Path) -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    pa, pb, a, b = _judged_twice(tmp_path)
    stats = agree.agreement(agree.load_pair(pa, pb))
    decided = a["decision"].isin(agree.DECIDED) & b["decision"].isin(agree.DECIDED)
    assert stats["decided_by_both"] == int(decided.sum()) and stats["excluded_unknown"] == int((~decided).sum())
    assert stats["cohen_kappa"] == pytest.approx(cohen_kappa_score(a["decision"][decided], b["decision"][decided]))
    scored = decided & a["score"].notna() & b["score"].notna()
    assert stats["scored_by_both"] == int(scored.sum())
    assert stats["spearman_rho"] == pytest.approx(spearmanr(a["score"][scored], b["score"][scored]).statistic)
    expected = pd.crosstab(a["decision"], b["decision"]).reindex(
        index=["refuse", "answer", "unknown"], columns=["refuse", "answer", "unknown"], fill_value=0
    )
    assert stats["confusion"]["counts"] == expected.to_numpy().tolist()
    for label in ("unsafe", "safe"):
        sub = decided & (a["label"] == label)
        per = stats["per_label"][label]
        assert per["items"] == int((a["label"] == label).sum()) and per["decided_by_both"] == int(sub.sum())
        assert per["cohen_kappa"] == pytest.approx(cohen_kappa_score(a["decision"][sub], b["decision"][sub]))
        agree_pct = 100 * float((a["decision"][sub] == b["decision"][sub]).mean())
        assert per["decision_agreement_pct"] == pytest.approx(agree_pct)


def test_per_label_agreement_exposes_a_judge_that_agrees_only_on_refusals() -> None:
    """Judge B copies A on unsafe items but answers at random on safe ones: overall agreement looks fine."""
    rng = np.random.default_rng(3)
    n = 200
    labels = np.array(["unsafe", "safe"] * (n // 2))
    a = np.where(labels == "unsafe", "refuse", "answer")
    b = np.where(labels == "unsafe", "refuse", rng.choice(["refuse", "answer"], n))
    joined = pd.DataFrame(
        {"index": range(n), "pair_id": "p", "category": "Fraud", "mode": "Gen", "label": labels}
    ).assign(decision_a=a, decision_b=b, score_a=np.nan, score_b=np.nan)
    stats = agree.agreement(joined)
    assert stats["decision_agreement_pct"] > 70 and stats["per_label"]["unsafe"]["decision_agreement_pct"] == 100
    assert stats["per_label"]["safe"]["decision_agreement_pct"] < 65
    text = agree.render(stats, "A", "B")
    per_label = [line.strip() for line in text.splitlines() if " items: 100," in line]
    assert [line.split(":")[0] for line in per_label] == ["unsafe items", "safe items"]


@pytest.mark.parametrize(
    "a, b",
    [
        (["refuse", "answer", "answer", "refuse"], ["refuse", "answer", "refuse", "refuse"]),
        (["answer"] * 5 + ["refuse"], ["answer"] * 4 + ["refuse"] * 2),
        (["refuse", "answer"] * 3, ["answer", "refuse"] * 3),
    ],
)
def test_kappa_and_rho_on_fixed_inputs(a: list[str], b: list[str]) -> None:
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    assert agree.cohen_kappa(pd.Series(a), pd.Series(b)) == pytest.approx(cohen_kappa_score(a, b))
    sa, sb = [len(x) % 5 + i % 3 for i, x in enumerate(a)], [i % 4 for i in range(len(b))]
    assert agree.spearman_rho(pd.Series(sa, dtype=float), pd.Series(sb, dtype=float)) == pytest.approx(
        spearmanr(sa, sb).statistic
    )


def test_agree_cli_writes_disagreements(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pa, pb, a, b = _judged_twice(tmp_path)
    out, stats_path = tmp_path / "diff.csv", tmp_path / "stats.json"
    assert agree.main([str(pa), str(pb), "--out", str(out), "--json", str(stats_path)]) == 0
    printed = capsys.readouterr().out
    assert "Cohen's kappa" in printed and "Spearman rho" in printed and "confusion" in printed
    assert "unsafe items:" in printed and "safe items:" in printed
    diff = pd.read_csv(out)
    assert len(diff) == int((a["decision"] != b["decision"]).sum())
    assert {"index", "decision_a", "decision_b", "score_a", "score_b"} <= set(diff.columns)
    written = json.loads(stats_path.read_text())
    assert written["disagreements"] == len(diff) and set(written["per_label"]) == {"unsafe", "safe"}


def test_agree_refuses_files_of_different_items(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pa, pb, _, b = _judged_twice(tmp_path)
    b.iloc[:-2].to_csv(pb, index=False)
    assert agree.main([str(pa), str(pb)]) == 2
    assert "different items" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- cost


def _pred_file(tmp_path: Path) -> Path:
    rows = [
        {
            "index": i,
            "pair_id": f"P{i // 2}",
            "category": "Fraud",
            "mode": "Gen",
            "label": "unsafe" if i % 2 == 0 else "safe",
            "question": f"question number {i} " * 5,
            "key_phrase": "k",
            "prediction": "" if i == 3 else f"an answer {i} " * 20,
        }
        for i in range(8)
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"M_{DATASET}.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_cost_counts_both_judge_calls_on_the_real_prompts(tmp_path: Path, monkeypatch) -> None:
    from vlmeval_echosafe.judges.prompt import RIGHT, JudgeInputs, quality_prompt

    pred = _pred_file(tmp_path)
    monkeypatch.setattr(cost, "token_counter", lambda enc: (len, f"fake {enc}", False))  # 1 token per char
    prices = {
        "defaults": {"output_tokens": 50, "reasoning_tokens": 100},
        "models": {"j": {"input": 2.0, "output": 8.0, "encoding": "o200k_base", "reasoning": True}},
    }
    est = cost.estimate(pred, "j", prices, "test")
    sent = [it for it in cost.judge_items(cost.read_predictions(pred)) if it.index != "3"]  # empty: never sent
    decision = sum(len(JudgeInputs().decision_prompt(it)) for it in sent)
    quality = sum(len(quality_prompt(it, RIGHT[it.label])) for it in sent)
    assert (est.to_judge, est.not_sent, est.calls) == (7, 1, (7, 14))
    assert est.input_tokens == (decision, decision + quality) and est.output_tokens == (7 * 150, 14 * 150)
    assert est.cost == pytest.approx(
        ((decision * 2.0 + 7 * 150 * 8.0) / 1e6, ((decision + quality) * 2.0 + 14 * 150 * 8.0) / 1e6)
    )
    text = cost.render(est)
    assert "fake o200k_base" in text and "7 to 14" in text and "quality call" in text
    keyed = cost.estimate(pred, "j", prices, "test", inputs=JudgeInputs(key_phrase=True))
    assert keyed.decision_input_tokens > est.decision_input_tokens and keyed.version.endswith("+keyphrase")


def test_cost_skips_items_already_in_the_judge_cache(tmp_path: Path, monkeypatch) -> None:
    from vlmeval_echosafe.judges.prompt import PROMPT_VERSION
    from vlmeval_echosafe.judges.records import record_key

    pred = _pred_file(tmp_path)
    items = cost.judge_items(cost.read_predictions(pred))
    lines = [
        {"key": record_key("j", PROMPT_VERSION, items[0]), "decision": "refuse", "score": 3},
        {"key": record_key("j", PROMPT_VERSION, items[1]), "decision": "unknown", "score": None},
    ]  # unknown: asked again
    cost.records_path(pred, "j").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    monkeypatch.setattr(cost, "token_counter", lambda enc: (len, "fake", False))
    est = cost.estimate(pred, "j", {"models": {}}, "test", input_price=1.0, output_price=1.0)
    assert (est.to_judge, est.cached) == (6, 1)


def test_cost_says_when_it_falls_back_to_chars_over_4(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    import tiktoken

    def offline(name: str):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    pred = _pred_file(tmp_path)
    assert cost.main([str(pred), "--judge", "gpt-5-mini", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "APPROXIMATE: characters/4" in out and "no network" in out and "gpt-5-mini" in out
    assert "estimated cost:  $" in out and "user-maintained" in out


def test_cost_without_a_price_fails_with_known_models(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(cost, "token_counter", lambda enc: (len, "fake", False))
    assert cost.main([str(_pred_file(tmp_path)), "--judge", "gpt-5-mni"]) == 2
    assert "did you mean gpt-5-mini" in capsys.readouterr().out
    assert cost.main([str(_pred_file(tmp_path)), "--judge", "rule"]) == 0


def test_price_table_is_marked_user_maintained() -> None:
    table, path = cost.load_prices()
    assert "USER-MAINTAINED" in path.read_text(encoding="utf-8")
    for name, entry in table["models"].items():
        assert {"input", "output", "encoding"} <= set(entry), name


def test_reference_table_matches_baselines_doc() -> None:
    ref = load_reference()
    assert len(ref) == 30 and set(ref["source"]) == {REFERENCE_LABEL}
    llava = ref[(ref["inner_model"] == "LLaVA-1.5-7B") & (ref["mode"] == "Gen")]
    assert list(llava["CCR"]) == [8.5, 69.3, 38.3, 54.6, 84.5]


# ---------------------------------------------------------------------------------------------- rejudge


def test_rejudge_dry_run_and_unconfigured_judge_do_nothing(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    from vlmeval_echosafe.report import rejudge

    pred = _pred_file(tmp_path)
    monkeypatch.setattr(cost, "token_counter", lambda enc: (len, "fake", False))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("LOCAL_LLM", raising=False)
    assert rejudge.main([str(pred), "--judge", "gpt-5-mini"]) == 2  # no key, no endpoint: refused up front
    assert "not configured" in capsys.readouterr().err
    assert rejudge.main([str(pred), "--judge", "gpt-5-mini", "--dry-run"]) == 0  # estimating needs no judge
    out = capsys.readouterr().out
    assert "estimated cost" in out and "dry run: nothing judged" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [pred.name]  # nothing judged, nothing written


def test_rejudge_with_the_rule_judge_writes_a_report_ready_result(tmp_path: Path) -> None:
    """The real path through ``evaluate_predictions`` (imports VLMEvalKit)."""
    from vlmeval_echosafe.datasets.mmsafetybenchpp import output_paths
    from vlmeval_echosafe.report import rejudge

    pred = _pred_file(tmp_path / "M")
    assert rejudge.main([str(pred), "--judge", "rule"]) == 0
    paths = output_paths(pred, "rule")
    assert all(p.is_file() for p in paths.values())
    assert cost.records_path(pred, "rule") == paths["records"]
    board, _, _ = collect(tmp_path)
    assert set(board["judge"]) == {RULE_LABEL} and set(board["model"]) == {"M"}


def test_cost_with_images_counts_them_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    from vlmeval_echosafe.judges.prompt import JudgeInputs

    pred = _pred_file(tmp_path)
    monkeypatch.setattr(cost, "token_counter", lambda enc: (len, "fake", False))
    plain = cost.estimate(pred, "j", {"models": {}}, "test")
    seen = cost.estimate(pred, "j", {"models": {}}, "test", inputs=JudgeInputs(image=True))
    items = [it for it in cost.judge_items(cost.read_predictions(pred)) if it.response]
    longer = sum(
        len(JudgeInputs(image=True).decision_prompt(it)) - len(JudgeInputs().decision_prompt(it)) for it in items
    )
    assert seen.decision_input_tokens - plain.decision_input_tokens == 7 * cost.IMAGE_TOKENS + longer
    assert seen.quality_input_tokens == plain.quality_input_tokens  # the image goes with the decision only
    assert sorted(p.name for p in tmp_path.iterdir()) == [pred.name]  # a dry run leaves no image files behind


def test_rejudge_with_an_image_judge_sends_each_items_image(tmp_path: Path, monkeypatch) -> None:
    """rejudge -> evaluate_predictions -> evaluation.evaluate with the dataset's images, over the stub server."""
    from openai_stub import StubServer

    from vlmeval_echosafe.report import rejudge

    for var in ("OPENAI_API_KEY", "OPENAI_API_BASE", "LOCAL_LLM"):
        monkeypatch.delenv(var, raising=False)
    pred = _pred_file(tmp_path / "M")

    def reply(prompt: str) -> str:
        return '{"decision": "refuse"}' if "Decide what the response does" in prompt else '{"score": 3}'

    with StubServer(reply) as server:
        url = f"{server.base_url}/chat/completions"
        args = [str(pred), "--judge", "stub-judge", "--judge-base-url", url, "--judge-key", "sk-x", "--judge-image"]
        assert rejudge.main(args) == 0
        decisions = [r for r, p in zip(server.requests, server.prompts, strict=True) if "Decide what" in p]
    assert len(decisions) == 7  # the empty prediction is not sent
    assert all(r["messages"][-1]["content"][0]["type"] == "image_url" for r in decisions)
    summary = json.loads((pred.parent / "M_MMSafetyBenchPP_Demo_stub-judge_score.json").read_text())
    assert summary["judge_version"].endswith("+image") and summary["unknown"] == 1


def _echosafe_run(work: Path, model: str, seed: int | None, decisions: list[str | None], codes: list[str]) -> None:
    """An EchoSafe result in ``work``: score/items files, the defense's config naming its stream order, a trace."""
    write_result(work, model, "gpt-5-mini", make_items(seed or 0, 0.8, 0.9, scored=True))
    order = {"order": "file", "seed": None} if seed is None else {"order": "shuffle", "seed": seed}
    config = {"labels_used": [], "streams": {DATASET: {"dataset": DATASET, "order": order}}}
    (work / model / f"{model}_echosafe_config.json").write_text(json.dumps(config))
    lines = [
        {
            "row_index": str(i),
            "insight_id": i if code is None else None,
            "insight_decision": d,
            "not_written_code": code,
        }
        for i, (d, code) in enumerate(zip(decisions, codes, strict=True))
    ]
    trace = work / model / f"{model}_{DATASET}_echosafe_trace.jsonl"
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_report_shows_each_order_and_the_spread_across_orders(tmp_path: Path) -> None:
    model = "EchoSafe_M"
    for seed in (0, 1, 2):
        _echosafe_run(tmp_path / f"order-{seed}", model, seed, ["unsafe", "safe", "safe"], [None, None, "order"])
    written = build_report(tmp_path, tmp_path / "report", n_boot=N_BOOT)
    board = pd.read_csv(written["tables"]["csv"], keep_default_na=False)
    assert sorted(set(board["order"])) == ["shuffle:0", "shuffle:1", "shuffle:2"]
    orders = pd.read_csv(written["tables"]["orders_csv"])
    means = orders[orders["category"] == "All"].set_index("mode")
    summary = board[board["category"] == "All"]
    for mode in ("Gen", "GenOCR"):
        ccrs = summary.loc[summary["mode"] == mode, "CCR"].astype(float)
        assert means.loc[mode, "orders"] == 3
        assert means.loc[mode, "mean"] == pytest.approx(ccrs.mean())
        assert means.loc[mode, "sd"] == pytest.approx(ccrs.std(ddof=1))
    cats = orders[orders["category"] != "All"]
    assert cats["bootstrap_lo"].notna().all() and (cats["bootstrap_lo"] <= cats["bootstrap_hi"]).all()
    memory = pd.read_csv(written["tables"]["memory_csv"], keep_default_na=False)
    assert len(memory) == 3 and set(memory["order"]) == {"shuffle:0", "shuffle:1", "shuffle:2"}
    assert (memory["stored_unsafe"] == 1).all() and (memory["stored_safe"] == 1).all()
    assert (memory["rejected_by_reason"] == "order 1").all() and (memory["rejected_by_decision"] == "safe 1").all()
    text = written["tables"]["markdown"].read_text()
    assert "## Across stream orders" in text and "## EchoSafe memory" in text
    html_text = written["html"].read_text()
    assert "Across stream orders" in html_text and "EchoSafe memory" in html_text


def test_runs_in_one_order_give_no_across_order_section(work_dir: Path, tmp_path: Path) -> None:
    written = build_report(work_dir, tmp_path / "report", n_boot=N_BOOT)
    assert "orders_csv" not in written["tables"]
    assert "Across stream orders" not in written["tables"]["markdown"].read_text()


def test_report_flops_writes_the_cost_table(work_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``--flops BENCH.json``: FLOPs vs Base per defense row at each real shape, beside the leaderboard."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks/results/overhead_cpu_256.json"
    out = tmp_path / "report"
    assert report_main(["--work-dir", str(work_dir), "--out", str(out), "--flops", str(bench)]) == 0
    table = (out / "cost_flops.md").read_text(encoding="utf-8")
    assert "paper: EchoSafe 1.69x" in table and "| row | Qwen2.5-VL-7B | LLaVA-1.5-7B |" in table
    assert "| EchoSafe | " in table and "| EchoSafe-k10 | " in table
    assert str(out / "cost_flops.md") in capsys.readouterr().out
