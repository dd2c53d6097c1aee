"""The chaos test (issue 16): EchoSafe at ``--batch-size 4`` SIGKILLed at seeded random moments, inside the bank's
log appends and compactions, the host's checkpoint writes, the trace, or at a random time, and rerun with
``--reuse`` after every kill; every run that completes ends equal to an uninterrupted ``run.py`` run: the same
predictions, the same bank (entries and order), the same trace (timings aside), no row lost, none doubled.

The uninterrupted reference is a real ``python run.py`` subprocess. The chaos runs are forked children of one
process that imported the host once (``tests/chaos_server.py``: the imports take most of a small run's time),
each running the launcher's ``main`` as ``run.py`` does; a first, uncounted-kill run of the server must equal the
reference, which shows the forked runs are faithful. Kill points are test-only hooks (``tests/chaos_hooks.py``,
``ECHOSAFE_CHAOS_KILL_AT=<site>:<n>``) on the calls every durable write goes through.

Size: ``ECHOSAFE_CHAOS_KILLS`` kills (CI: 6), seed ``ECHOSAFE_CHAOS_SEED``, dataset ``ECHOSAFE_CHAOS_DATA``
(default the 12-item ``MMSafetyBenchPP_DemoMini``); ``ECHOSAFE_CHAOS_REPORT=path`` writes the kill points and
figures as JSON (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from chaos_hooks import COUNTS_ENV, ENV, SEED_ENV, SITES
from runs import run_env

from vlmeval_echosafe.core.trace import read_trace
from vlmeval_echosafe.memory import MemoryBank

REPO = Path(__file__).resolve().parents[1]
MODEL = "EchoSafe_TinyQwen2VL"
KILLS = int(os.environ.get("ECHOSAFE_CHAOS_KILLS", "6"))
SEED = int(os.environ.get("ECHOSAFE_CHAOS_SEED", "16"))
DATA = os.environ.get("ECHOSAFE_CHAOS_DATA", "MMSafetyBenchPP_DemoMini")
REPORT = os.environ.get("ECHOSAFE_CHAOS_REPORT")


def _env(tmp: Path) -> dict[str, str]:
    return run_env(tmp, tmp / "cache", TOKENIZERS_PARALLELISM="false")


def _argv(work: Path) -> list[str]:
    return ["--work-dir", str(work), "--data", DATA, "--model", MODEL, "--judge", "rule", "--batch-size", "4"]


class Server:
    """``tests/chaos_server.py`` in a subprocess: one forked run per call."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.log = cwd / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/chaos_server.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            env=env,
            cwd=cwd,
            text=True,
        )
        assert json.loads(self.proc.stdout.readline() or "{}").get("ready"), self.log.read_text()[-3000:]

    def run(self, work: Path, log: Path, env: dict[str, str], kill_after: float | None = None) -> dict:
        job = {"argv": [*_argv(work), "--reuse"], "log": str(log), "env": env, "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the chaos server died:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _state(work: Path) -> dict:
    """What a finished run leaves: predictions by row, bank entries in order, trace lines without timings. A torn
    bank log or trace line left behind would warn: that is an error here."""
    run_dir = work / MODEL
    pred = pd.read_csv(run_dir / f"{MODEL}_{DATA}.tsv", sep="\t", keep_default_na=False, dtype=str)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank = MemoryBank.load(run_dir / "echosafe_bank" / DATA).entries()
        trace = read_trace(run_dir / f"{MODEL}_{DATA}_echosafe_trace.jsonl")
    for record in trace:
        record.pop("timings")
    return {"predictions": list(zip(pred["index"], pred["prediction"], strict=True)), "bank": bank, "trace": trace}


def _rows_done(work: Path, total: int) -> int:
    from vlmeval.smp import load

    run_dir = work / MODEL
    if (run_dir / f"{MODEL}_{DATA}.tsv").exists():
        return total
    checkpoint = run_dir / f"01_{DATA}.pkl"
    return len(load(str(checkpoint))) if checkpoint.exists() else 0


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


@pytest.mark.slow
def test_sigkill_at_random_write_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    env = _env(tmp_path)
    started = time.monotonic()
    ref = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *_argv(tmp_path / "reference")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    reference_seconds = time.monotonic() - started
    reference = _state(tmp_path / "reference")
    rows = [r["row_index"] for r in reference["trace"]]
    assert len(rows) == len(set(rows)) == len(reference["predictions"]) and reference["bank"]
    bank = tmp_path / "reference" / MODEL / "echosafe_bank" / DATA  # closed at the end: one snapshot, no log
    (snapshot,) = bank.glob("snap-*")
    assert (bank / "CURRENT").read_text().strip() == snapshot.name and (snapshot / "log.bin").stat().st_size == 0
    server = Server(env, tmp_path)
    try:
        # a forked run, counting the visits of every site: it must equal run.py's
        counts_file = tmp_path / "counts.json"
        log = tmp_path / "count.log"
        counted = server.run(tmp_path / "count", log, {COUNTS_ENV: str(counts_file)})
        assert counted["code"] == 0, _tail(log)
        assert _state(tmp_path / "count") == reference
        counts = json.loads(counts_file.read_text())
        sites = sorted(s for s in SITES if counts.get(s))
        assert {"bank-log", "bank-snapshot", "checkpoint", "trace", "insight"} <= set(sites), counts

        rng = random.Random(SEED)
        kills, rounds, runs = [], 0, 0
        work = tmp_path / f"round-{rounds}"
        while True:
            done = _rows_done(work, len(rows))
            log = tmp_path / f"run-{runs}.log"
            runs += 1
            if len(kills) >= KILLS:  # the last round runs to its end
                point, env_, after = None, {}, None
            elif (site := rng.choice([*sites, "time"])) == "time":
                after = round(rng.uniform(0.2, counted["seconds"]), 2)
                point, env_ = f"time:{after}s", {}
            else:
                n = rng.randint(1, max(1, round(counts[site] * (len(rows) - done) / len(rows))))
                point, env_, after = f"{site}:{n}", {ENV: f"{site}:{n}", SEED_ENV: str(rng.randrange(1 << 30))}, None
            result = server.run(work, log, env_, kill_after=after)
            if result["signal"] == signal.SIGKILL:
                kills.append({"at": point, "rows_done_before": done, "seconds": result["seconds"]})
                continue
            assert result["code"] == 0, f"run {runs} ({point}) failed:\n{_tail(log)}"
            state = _state(work)
            assert [r["row_index"] for r in state["trace"]] == rows  # nothing lost, nothing doubled
            assert state == reference, f"round {rounds} differs from the uninterrupted run (kills: {kills})"
            rounds += 1
            if len(kills) >= KILLS:
                break
            work = tmp_path / f"round-{rounds}"
    finally:
        server.close()
    record = {
        "data": DATA,
        "items": len(rows),
        "batch_size": 4,
        "seed": SEED,
        "kills": len(kills),
        "rounds_completed": rounds,
        "runs": runs,
        "kill_points": kills,
        "sites_visited_per_uninterrupted_run": counts,
        "seconds": round(time.monotonic() - started, 1),
        "reference_run_py_seconds": round(reference_seconds, 1),
        "first_forked_run_seconds": counted["seconds"],
    }
    print(json.dumps({k: v for k, v in record.items() if k != "kill_points"}))
    if REPORT:
        Path(REPORT).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    assert len(kills) == KILLS
