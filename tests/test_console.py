"""What a run prints (vlmeval_echosafe/console.py): the quiet host console, the closing summary of both harnesses,
one message for a failed combination, and the lmms-eval path free of the host's false ERROR line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from runs import NEEDS_LMMS_EVAL, closing_paths, console_problems, run_env

from vlmeval_echosafe import console

REPO = Path(__file__).resolve().parents[1]
ECHO = "EchoSafe_TinyQwen2VL"


def _host_logger(stream: io.StringIO, ours: set[str], others: bool) -> logging.Logger:
    logger = logging.getLogger(f"quiet_test_{id(stream)}")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(console.QuietConsole(ours, others))
    handler.setFormatter(console._NoTraceback(logging.Formatter("%(levelname)s %(message)s"), "outputs/logs/x.log"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def _host_records(logger: logging.Logger, dataset: str) -> None:
    """The records VLMEvalKit's run_local_mode logs around one evaluated dataset (vlmeval/run.py)."""
    logger.info("=========== M ===========")
    logger.info(f"The evaluation of model M x dataset {dataset} has finished! ")
    logger.info("Evaluation Results:")
    logger.info('\n{"RR": 0.0}')
    logger.warning("--reuse is not set, this run will start from a fresh output directory")


@pytest.mark.parametrize("ours", [True, False], ids=["mmsafetybenchpp", "host dataset"])
def test_the_evaluation_dump_is_left_off_only_where_the_closing_summary_shows_it(ours):
    stream = io.StringIO()
    logger = _host_logger(stream, {"MMSafetyBenchPP_Demo"} if ours else set(), others=not ours)
    _host_records(logger, "MMSafetyBenchPP_Demo" if ours else "MME")
    logger.info("Run Summary Report:")
    logger.info("\nbenchmark  primary_metric")
    logger.warning("a real warning")
    shown = stream.getvalue()
    assert ("Evaluation Results" in shown) is (not ours) and ('"RR"' in shown) is (not ours)
    assert ("Run Summary Report" in shown) is (not ours)
    assert "a real warning" in shown and "=====" not in shown and "--reuse is not set" not in shown


def test_a_failed_combination_is_left_to_the_closing_message_and_other_tracebacks_name_the_log():
    stream = io.StringIO()
    logger = _host_logger(stream, set(), others=True)
    try:
        raise FileNotFoundError("weights missing. Fix: run hf download")
    except FileNotFoundError as err:
        logger.exception(f"Model M x Dataset D combination failed: {err}, skipping this combination.")
        logger.exception("some other host failure")
    shown = stream.getvalue()
    assert "combination failed" not in shown and "Traceback" not in shown
    assert "some other host failure (traceback in outputs/logs/x.log)" in shown


def test_closing_block_ends_with_the_table_then_the_paths_in_one_style(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    block = console.closing_block(
        "M x D",
        "mode category\nGen  All",
        {"predictions": Path("./out/p.tsv"), "scores": tmp_path / "out" / "s.csv", "bank": None, "trace": None},
        memory="stored 1",
    )
    assert block.splitlines()[-3:] == ["Gen  All", "predictions: out/p.tsv", "scores:      out/s.csv"]
    assert console.shown("/elsewhere/x") == "/elsewhere/x"


def test_lmms_run_dir_follows_the_adapters_model_args():
    args = type("A", (), {"model": "echosafe", "model_args": "inner=TinyQwen2VL,k=3,work_dir=w"})()
    assert console.lmms_run_dir(args) == (Path("w") / ECHO, ECHO)
    args.model, args.model_args = "vlmeval_echosafe", "name=Base_TinyQwen2VL"
    assert console.lmms_run_dir(args) == (Path("outputs/lmms_eval/Base_TinyQwen2VL"), "Base_TinyQwen2VL")
    args.model = "llava"
    assert console.lmms_run_dir(args) is None


def test_missing_weights_print_one_fix_and_no_traceback(tmp_path):
    """A model whose weights are not in the (empty) Hugging Face cache: one message with the fix, naming the log
    file that holds the traceback; exit 1."""
    env = run_env(tmp_path, tmp_path / "cache", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf/hub"))
    cmd = [sys.executable, str(REPO / "run.py"), "--data", "MMSafetyBenchPP_DemoMini", "--model", "EchoSafe_Qwen2VL"]
    proc = subprocess.run([*cmd, "--judge", "rule"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output and output.count("Fix:") == 1, output[-3000:]
    assert "EchoSafe_Qwen2VL x MMSafetyBenchPP_DemoMini failed: the weights of 'Qwen/Qwen2-VL-7B-Instruct'" in output
    log = output.rsplit("traceback and host log: ", 1)[1].split()[0]
    assert "Traceback" in (tmp_path / log).read_text()


@NEEDS_LMMS_EVAL
def test_lmms_eval_demo_ends_with_the_table_then_the_paths_and_no_error(tmp_path):
    """README's lmms-eval command on the 12-item split: no ERROR (the host's missing-.env line included), no
    traceback, and after lmms-eval's own table the same closing summary as run.py's."""
    env = run_env(tmp_path, tmp_path / "cache", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "hf_ds"))
    cmd = [str(Path(sys.executable).with_name("lmms-eval")), "eval", "--model", "echosafe", "--model_args"]
    cmd += ["inner=TinyQwen2VL", "--tasks", "mmsafetybenchpp_demo_mini", "--include_path"]
    cmd += [str(REPO / "task_configs" / "lmms_eval"), "--output_path", "outputs/lmms_eval"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Error during evaluation" not in output, output[-4000:]
    assert not console_problems(output), "\n".join(console_problems(output))
    assert "[A" not in proc.stderr  # no weight-loading bar nested under the model's bar
    paths = closing_paths(proc.stdout, tmp_path)
    assert paths["trace"] == tmp_path / f"outputs/lmms_eval/{ECHO}/{ECHO}_MMSafetyBenchPP_DemoMini_echosafe_trace.jsonl"
    assert proc.stdout.index("|mmsafetybenchpp_demo_mini") < proc.stdout.index("EchoSafe memory:")
