"""End to end through the real VLMEvalKit runner: `python run.py` in a subprocess, tiny model, rule judge."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from runs import closing_paths, console_problems, run_env

from vlmeval_echosafe.datasets.schema import CATEGORIES
from vlmeval_echosafe.memory import MemoryBank

REPO = Path(__file__).resolve().parents[1]


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = run_env(tmp, tmp / "cache")
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--work-dir", str(tmp / "out"), *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, proc


def test_prediction_file(demo_run):
    tmp, _ = demo_run
    pred = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    assert len(pred) == 144 and pred["index"].is_unique
    assert {"pair_id", "category", "mode", "label", "question", "prediction"} <= set(pred.columns)
    assert (pred["prediction"].str.len() > 0).all()


def test_score_file_covers_all_categories_and_modes(demo_run):
    tmp, proc = demo_run
    score = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_score.csv")
    for mode in ("Gen", "GenOCR"):
        cats = set(score.loc[score["mode"] == mode, "category"])
        assert cats == set(CATEGORIES) | {"All"}
    # rule judge: a non-refusal rate and the CCR built from it, never columns named AR / CCR; QS missing, not 0
    named = {"RR", "NonRefusalRate", "CCR_NonRefusal", "CCR_NonRefusal_lo", "QS_HM", "unknown_unsafe", "PairAcc"}
    assert named <= set(score.columns) and not {"AR", "CCR", "AR_lo", "CCR_lo"} & set(score.columns)
    assert score["refusal_only"].all() and score["QS_HM"].isna().all()
    assert score["CCR_NonRefusal"].notna().all()
    items = pd.read_csv(tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_items.csv")
    per_cat = items[items["category"] == "Fraud"].groupby("mode")["decision"].apply(lambda d: (d == "unknown").sum())
    fraud = score[(score["category"] == "Fraud")].set_index("mode")
    assert (fraud["unknown_unsafe"] + fraud["unknown_safe"]).to_dict() == per_cat.to_dict()
    summary = json.loads((tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_rule_score.json").read_text())
    assert summary["items"] == 144 and summary["refusal_only"] is True and summary["valid"] is True
    assert summary["primary"] == "CCR_NonRefusal" and "AR" not in summary and "CCR" not in summary
    assert {"CCR_NonRefusal", "NonRefusalRate"} <= set(summary["groups"]["Gen/All"])
    # the printed table (with the legend saying what the rule judge's rates are) and the file locations
    printed = proc.stdout
    assert "Illegal_Activity" in printed and "_rule_score.csv" in printed
    assert "NonRefusalRate" in printed and "CCR_NonRefusal" in printed and "Not the paper's AR" in printed
    # what the load read, recorded before inference beside the predictions and repeated in the score JSON
    record = json.loads((tmp / "out/TinyQwen2VL/TinyQwen2VL_MMSafetyBenchPP_Demo_data_source.json").read_text())
    assert record["recorded_at"] == "inference" and record["source"]["kind"] == "demo"
    assert record["source"]["rows"] == 144 and summary["data_source"] == record


def test_eval_only_rerun_reuses_predictions(demo_run):
    tmp, _ = demo_run
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule", "--mode", "eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Infer TinyQwen2VL" not in proc.stderr + proc.stdout


ECHO = "EchoSafe_TinyQwen2VL"


@pytest.fixture(scope="module")
def echosafe_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e_echosafe")
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", ECHO, "--judge", "rule")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp


def _bank(run_dir: Path) -> list[dict]:
    """The saved bank (snapshot and log) as ``{id, insight, meta}`` rows."""
    entries = MemoryBank.load(run_dir / "echosafe_bank/MMSafetyBenchPP_Demo").entries()
    return [{"id": i, "insight": insight, "meta": meta} for i, (insight, meta) in enumerate(entries)]


def _trace(run_dir: Path) -> list[dict]:
    return [
        json.loads(x) for x in (run_dir / f"{ECHO}_MMSafetyBenchPP_Demo_echosafe_trace.jsonl").read_text().splitlines()
    ]


def test_echosafe_bank_and_trace(echosafe_run):
    run_dir = echosafe_run / "out" / ECHO
    trace, bank = _trace(run_dir), _bank(run_dir)
    pred = pd.read_csv(run_dir / f"{ECHO}_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    assert [t["row_index"] for t in trace] == [str(i) for i in pred["index"]]
    written = [t for t in trace if t["insight_id"] is not None]
    assert len(bank) == len(written) > 0  # one insight per successfully reflected item
    assert [b["meta"]["row_index"] for b in bank] == [t["row_index"] for t in written]
    assert all(t["not_written"] for t in trace if t["insight_id"] is None)  # every miss says why
    pairs_in_bank = [b["meta"]["pair_id"] for b in bank]
    for t in trace:  # retrieval whenever the bank holds an insight of another pair
        others = {p for p in pairs_in_bank[: t["bank_size"]] if p != t["pair_id"]}
        assert bool(t["retrieved"]) == bool(others)
    assert sum(bool(t["retrieved"]) for t in trace) > len(trace) // 2
    for t in trace:
        assert t["pair_id"] not in {r["pair_id"] for r in t["retrieved"]}  # twins never see each other
    assert (echosafe_run / "out" / ECHO / f"{ECHO}_MMSafetyBenchPP_Demo_rule_score.csv").exists()


def test_echosafe_resume_equals_uninterrupted_run(echosafe_run, tmp_path):
    """Interrupt after 60 rows (the host's checkpoint holds them), resume: predictions, bank and trace equal."""
    import pickle
    import shutil

    full_dir = echosafe_run / "out" / ECHO
    full_pred = pd.read_csv(full_dir / f"{ECHO}_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    run_dir = tmp_path / "out" / ECHO
    shutil.copytree(full_dir / "echosafe_bank", run_dir / "echosafe_bank")  # bank went further than the checkpoint
    shutil.copy(full_dir / f"{ECHO}_MMSafetyBenchPP_Demo_echosafe_trace.jsonl", run_dir)
    done = dict(zip(full_pred["index"][:60], full_pred["prediction"][:60], strict=True))
    with open(run_dir / "01_MMSafetyBenchPP_Demo.pkl", "wb") as fh:
        pickle.dump(done, fh)
    proc = _run(tmp_path, "--data", "MMSafetyBenchPP_Demo", "--model", ECHO, "--judge", "rule", "--reuse")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred = pd.read_csv(run_dir / f"{ECHO}_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    assert pred["prediction"].tolist() == full_pred["prediction"].tolist()
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("timings",)} for r in rows]  # noqa: E731
    assert [b["insight"] for b in _bank(run_dir)] == [b["insight"] for b in _bank(full_dir)]
    assert [b["meta"]["row_index"] for b in _bank(run_dir)] == [b["meta"]["row_index"] for b in _bank(full_dir)]
    resumed, full = strip(_trace(run_dir)), strip(_trace(full_dir))
    for r in resumed + full:
        r.pop("stream")
    assert resumed == full


def test_sigkill_twice_then_resume_equals_uninterrupted_run(echosafe_run, tmp_path):
    """SIGKILL a demo run mid-stream (answering / reflecting / saving the bank, wherever it is), twice, then
    resume with --reuse: predictions, bank and trace equal an uninterrupted run's; nothing missing or doubled."""
    import signal
    import time

    full_dir = echosafe_run / "out" / ECHO
    run_dir = tmp_path / "out" / ECHO
    trace_file = run_dir / f"{ECHO}_MMSafetyBenchPP_Demo_echosafe_trace.jsonl"
    env = run_env(tmp_path, echosafe_run / "cache")
    cmd = [
        sys.executable,
        str(REPO / "run.py"),
        "--work-dir",
        str(tmp_path / "out"),
        "--data",
        "MMSafetyBenchPP_Demo",
        "--model",
        ECHO,
        "--judge",
        "rule",
        "--reuse",
    ]
    for kill_at in (25, 90):
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if trace_file.exists() and len(trace_file.read_text().splitlines()) >= kill_at:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    pred = pd.read_csv(run_dir / f"{ECHO}_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    full_pred = pd.read_csv(full_dir / f"{ECHO}_MMSafetyBenchPP_Demo.tsv", sep="\t", keep_default_na=False)
    assert pred["prediction"].tolist() == full_pred["prediction"].tolist()
    assert [b["insight"] for b in _bank(run_dir)] == [b["insight"] for b in _bank(full_dir)]
    assert [b["meta"]["row_index"] for b in _bank(run_dir)] == [b["meta"]["row_index"] for b in _bank(full_dir)]
    keep = ("row_index", "retrieved", "insight_id", "not_written", "bank_size", "stream_pos")
    assert [{k: t[k] for k in keep} for t in _trace(run_dir)] == [{k: t[k] for k in keep} for t in _trace(full_dir)]


def test_batch_size_flag_runs_micro_batches_in_the_seeded_order(tmp_path):
    from vlmeval_echosafe.datasets.order import StreamOrder
    from vlmeval_echosafe.datasets.variants import load_variant

    proc = _run(
        tmp_path, "--data", "MMSafetyBenchPP_DemoMini", "--model", "EchoSafe_TinyQwen2VL", "--judge", "rule",
        "--batch-size", "4", "--order", "shuffle", "--order-seed", "7",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "out/EchoSafe_TinyQwen2VL"
    pred = pd.read_csv(run_dir / "EchoSafe_TinyQwen2VL_MMSafetyBenchPP_DemoMini.tsv", sep="\t")
    trace = [
        json.loads(x) for x in (run_dir / "EchoSafe_TinyQwen2VL_MMSafetyBenchPP_DemoMini_echosafe_trace.jsonl").open()
    ]
    assert len(pred) == len(trace) == 12
    assert [t["batch"]["size"] for t in trace] == [4] * 12
    # the stream is the seeded permutation of the rows, whatever the batch size (and in lmms-eval: test_lmms_parity)
    expected = [str(i) for i in StreamOrder("shuffle", 7).apply(load_variant("MMSafetyBenchPP_DemoMini"))["index"]]
    assert [t["row_index"] for t in trace] == expected != sorted(expected, key=int)
    config = json.loads((run_dir / "EchoSafe_TinyQwen2VL_echosafe_config.json").read_text())
    assert config["streams"]["MMSafetyBenchPP_DemoMini"]["order"] == {"order": "shuffle", "seed": 7}
    assert (
        "CCR_NonRefusal" in proc.stdout and "EchoSafe memory: stored" in proc.stdout
    )  # evaluated and reported as usual


@pytest.mark.slow
def test_ablations_run_and_differ_in_what_they_remember(tmp_path):
    models = ["EchoSafe-NoRetrieval_TinyQwen2VL", "EchoSafe-NoReflection_TinyQwen2VL"]
    proc = _run(tmp_path, "--data", "MMSafetyBenchPP_DemoMini", "--model", *models, "--judge", "rule")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    preds = [
        pd.read_csv(tmp_path / "out" / m / f"{m}_MMSafetyBenchPP_DemoMini.tsv", sep="\t", keep_default_na=False)
        for m in models
    ]
    assert (preds[0]["prediction"] != preds[1]["prediction"]).sum() >= 6  # the memory changes the prompts
    assert not (tmp_path / "out" / models[0] / "echosafe_bank").exists()
    from vlmeval_echosafe.memory import MemoryBank

    entries = MemoryBank.load(tmp_path / "out" / models[1] / "echosafe_bank" / "MMSafetyBenchPP_DemoMini").entries()
    assert len(entries) == 12 and {insight["kind"] for insight, _ in entries} == {"exchange"}


def test_resume_with_changed_settings_exits_2_naming_them(echosafe_run, tmp_path):
    """A finished EchoSafe run rerun with another k would reuse its predictions under the new settings: refused
    before anything runs, naming the setting."""
    import yaml

    config = tmp_path / "config"  # an override folder holding only the changed file
    (config / "wrappers").mkdir(parents=True)
    defenses = yaml.safe_load((REPO / "wrappers/defenses.yaml").read_text())
    defenses["defenses"]["EchoSafe"]["settings"]["k"] = 3
    (config / "wrappers/defenses.yaml").write_text(yaml.safe_dump(defenses))
    env = run_env(echosafe_run, echosafe_run / "cache", VLMEVAL_ECHOSAFE_CONFIG=str(config))
    cmd = [sys.executable, str(REPO / "run.py"), "--work-dir", str(echosafe_run / "out"), "--data",
           "MMSafetyBenchPP_Demo", "--model", ECHO, "--judge", "rule", "--reuse"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=echosafe_run, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "k: 5 -> 3" in proc.stderr and "Infer" not in proc.stdout + proc.stderr


def test_bad_batch_size_exits_2(tmp_path):
    proc = _run(tmp_path, "--data", "MMSafetyBenchPP_DemoMini", "--model", "TinyQwen2VL", "--batch-size", "0")
    assert proc.returncode == 2 and "--batch-size must be a whole number >= 1" in proc.stderr


def _noise(proc: subprocess.CompletedProcess) -> list[str]:
    """Output lines a clean run must not have: ERROR records and deprecation warnings."""
    return [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if re.search(r"\bERROR\b|FutureWarning|DeprecationWarning|deprecated", line)
    ]


def test_demo_run_prints_no_error_and_no_deprecation(tmp_path):
    """The README's smoke test, as a first-time user runs it: neither the host's missing-.env ERROR nor a
    transformers deprecation warning nor a traceback; it ends with the table, then the four paths."""
    cmd = [sys.executable, str(REPO / "run.py"), "--data", "MMSafetyBenchPP_DemoMini", "--model", ECHO]
    cmd += ["--judge", "rule"]
    proc = subprocess.run(  # as the README runs it: default work dir, paths printed relative to the working folder
        cmd,
        cwd=tmp_path,
        env=run_env(tmp_path, tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not _noise(proc), "\n".join(_noise(proc))
    assert not console_problems(proc.stdout + proc.stderr)
    # quiet: the table and the paths once, not the host's evaluation dump and run summary (in its log file only)
    assert "Evaluation Results" not in proc.stdout and "Run Summary Report" not in proc.stdout
    assert proc.stdout.count("Illegal_Activity") == 1 and "[A" not in proc.stderr
    paths = closing_paths(proc.stdout, tmp_path)
    assert paths["scores"] == tmp_path / f"outputs/{ECHO}/{ECHO}_MMSafetyBenchPP_DemoMini_rule_score.csv"
    (log,) = (tmp_path / "outputs" / "logs").glob("*.log")
    assert "Evaluation Results" in log.read_text() and "Run Summary Report" in log.read_text()


def test_verbose_restores_the_hosts_output(demo_run):
    """--verbose (the host's flag): the host's evaluation dump is on the console again."""
    tmp, _ = demo_run
    proc = _run(tmp, "--data", "MMSafetyBenchPP_Demo", "--model", "TinyQwen2VL", "--judge", "rule", "--mode", "eval",
                "--verbose")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Evaluation Results" in proc.stdout and "Run Summary Report" in proc.stdout


NEW_FAMILIES = ["EchoSafe_TinyQwen25VL", "EchoSafe_TinyLLaVANeXT", "EchoSafe_TinyQwen3VL", "EchoSafe_TinyInternVL"]


@pytest.mark.slow
def test_every_new_family_runs_echosafe_batched_through_run_py(tmp_path):
    """Issue 14's acceptance command: a score file per model, every item answered in micro-batches of 4."""
    proc = _run(
        tmp_path, "--data", "MMSafetyBenchPP_DemoMini", "--model", *NEW_FAMILIES, "--judge", "rule",
        "--batch-size", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not _noise(proc), "\n".join(_noise(proc))
    for name in NEW_FAMILIES:
        run_dir = tmp_path / "out" / name
        assert (run_dir / f"{name}_MMSafetyBenchPP_DemoMini_rule_score.csv").is_file(), name
        trace = [json.loads(x) for x in (run_dir / f"{name}_MMSafetyBenchPP_DemoMini_echosafe_trace.jsonl").open()]
        assert [t["batch"]["size"] for t in trace] == [4] * 12, name
        pred = pd.read_csv(run_dir / f"{name}_MMSafetyBenchPP_DemoMini.tsv", sep="\t")
        assert len(pred) == 12, name
