"""One EchoSafe stream across torchrun ranks: the step layout is the host's row split, the ranks exchange their
items in stream order and fail together, and two CPU ranks at batch size B give exactly what one process gives
at 2·B (predictions, bank and trace), also after a kill that left the ranks' checkpoints a step apart."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from runs import run_env, run_outputs

from vlmeval_echosafe.core.sync import StreamSync, interleave, owned

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_steps_are_the_hosts_row_split(world, batch):
    """For every length: cutting the stream into steps of W·B and giving rank r the step's items r, r+W, … hands
    each rank exactly its rows r::W, B at a time, in order; `interleave` restores the stream."""
    for n in range(0, 23):
        rows = list(range(n))
        per_rank: list[list[list[int]]] = [[] for _ in range(world)]
        for start in range(0, n, world * batch):
            step = rows[start : start + world * batch]
            mine = [[step[i] for i in owned(len(step), r, world)] for r in range(world)]
            assert interleave(mine) == step
            for r in range(world):
                per_rank[r].append(mine[r])
        for r in range(world):
            split = rows[r::world]
            host = [split[i : i + batch] for i in range(0, len(split), batch)]
            assert [chunk for chunk in per_rank[r] if chunk] == host


def test_one_process_makes_no_collective_call():
    sync = StreamSync()
    assert not sync.multi and sync.persists and sync.owned(3) == [0, 1, 2]
    assert sync.exchange(lambda: ["a", "b"]) == ["a", "b"]
    with pytest.raises(ZeroDivisionError):  # with one process the error is the work's own
        sync.exchange(lambda: [1 / 0])
    sync.barrier()


RANKS_SCRIPT = """
import json, sys
import torch.distributed as dist
from vlmeval_echosafe.core.sync import StepError, StreamSync

dist.init_process_group("gloo")
sync = StreamSync.from_process_group()
out = {"rank": sync.rank, "persists": sync.persists}
out["step"] = sync.exchange(lambda: [f"r{sync.rank}i{j}" for j in range(2 - sync.rank)])  # rank 1: one item

def work():
    if sync.rank == 1:
        raise ValueError("no memory left")
    return ["fine"]

try:
    sync.exchange(work)
except StepError as err:
    out["error"] = str(err)
out["after"] = sync.exchange(lambda: [sync.rank])  # the group is still usable
dist.destroy_process_group()
with open(sys.argv[1] + f"/{sync.rank}.json", "w") as fh:
    json.dump(out, fh)
"""


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def test_ranks_exchange_in_stream_order_and_fail_together(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(RANKS_SCRIPT))
    proc = subprocess.run(_torchrun(str(script), str(tmp_path)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert [r["persists"] for r in results] == [True, False]
    for r in results:
        assert r["step"] == ["r0i0", "r1i0", "r0i1"]  # rank 0's items 0 and 2 of the step, rank 1's item 1
        assert "rank 1: ValueError: no memory left" in r["error"]  # raised on both ranks, naming the rank
        assert r["after"] == [0, 1]


# ---- end to end: torchrun run.py ----------------------------------------------------------------------------

ECHO = "EchoSafe_TinyQwen2VL"
DATA = "MMSafetyBenchPP_DemoMini"


def _run(tmp: Path, cache: Path, launcher: list[str], batch: int, *extra: str) -> None:
    args = [str(REPO / "run.py"), "--work-dir", str(tmp / "out"), "--data", DATA, "--model", ECHO, "--judge", "rule"]
    proc = subprocess.run(
        [*launcher, *args, "--batch-size", str(batch), *extra],
        cwd=tmp,
        env=run_env(tmp, cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _outputs(run_dir: Path) -> tuple[list[str], list[list], list[dict]]:
    return run_outputs(run_dir, DATA)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_cache):
    tmp = tmp_path_factory.mktemp("torchrun")
    _run(tmp, tiny_cache, _torchrun(), 2)
    return tmp / "out" / ECHO


@pytest.mark.slow
def test_two_ranks_equal_one_process_at_twice_the_batch(two_ranks, tmp_path, tiny_cache):
    _run(tmp_path, tiny_cache, [sys.executable], 4)
    one = _outputs(tmp_path / "out" / ECHO)
    two = _outputs(two_ranks)
    assert two == one
    preds, bank, trace = two
    assert [t["batch"] for t in trace] == [{"size": 4, "position": i % 4} for i in range(12)]
    assert sum(bool(t["retrieved"]) for t in trace) >= 8 and len(bank) >= 8  # later steps read a growing bank
    config = json.loads((two_ranks / f"{ECHO}_echosafe_config.json").read_text())
    assert config["reflection"] == {"path": "kv-session", "decoding": "constrained"}
    assert not list(two_ranks.glob("*.pkl"))  # the host merged and removed both ranks' checkpoints


@pytest.mark.slow
def test_two_ranks_resume_after_a_kill_between_their_checkpoints(two_ranks, tmp_path, tiny_cache):
    """Killed after rank 0 wrote its checkpoint of step 2 and before rank 1 did; the bank and trace had gone
    further. The resumed run keeps the checkpointed rows (marked here, to tell them from recomputed ones) and gives
    the uninterrupted run's predictions for the rest, and its bank and trace."""
    preds = pd.read_csv(two_ranks / f"{ECHO}_{DATA}.tsv", sep="\t", keep_default_na=False)
    order = list(preds["index"])
    run_dir = tmp_path / "out" / ECHO
    run_dir.mkdir(parents=True)
    shutil.copytree(two_ranks / "echosafe_bank", run_dir / "echosafe_bank")
    shutil.copy(two_ranks / f"{ECHO}_{DATA}_echosafe_trace.jsonl", run_dir)
    for rank, steps in ((0, 2), (1, 1)):  # each rank's checkpoint holds whole steps of 2 ranks x 2 items
        with open(run_dir / f"{rank}2_{DATA}.pkl", "wb") as fh:
            pickle.dump({i: f"checkpointed {i}" for i in order[: 4 * steps]}, fh)
    _run(tmp_path, tiny_cache, _torchrun(), 2, "--reuse")
    (resumed, bank, trace), (full, full_bank, full_trace) = _outputs(run_dir), _outputs(two_ranks)
    assert resumed == [f"checkpointed {i}" for i in order[:8]] + full[8:]
    assert bank == full_bank and trace == full_trace
