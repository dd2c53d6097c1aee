"""The host's checkpoint is written atomically: a write that fails or is killed halfway leaves the previous
checkpoint readable."""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vlmeval_echosafe.vlmevalkit import checkpoint

ROOT = Path(__file__).resolve().parents[1]


class Bomb:
    """Fails to pickle: an exception in the middle of the host's write."""

    def __reduce__(self):
        raise RuntimeError("injected failure while pickling")


@pytest.fixture()
def host_modules(monkeypatch):
    """The host's inference modules with their own ``dump`` (restored after the test)."""
    import vlmeval.inference as inference
    import vlmeval.utils.mp_util as mp_util

    for module in (inference, mp_util):
        monkeypatch.setattr(module, "dump", getattr(module, "_echosafe_host_dump", module.dump))
        monkeypatch.delattr(module, "_echosafe_host_dump", raising=False)
    return inference, mp_util


def test_failed_write_keeps_the_previous_checkpoint(host_modules, tmp_path: Path) -> None:
    inference, mp_util = host_modules
    host_dump = inference.dump
    previous = {i: f"answer {i}" for i in range(50)}
    # Without the patch, the host's dump destroys the previous checkpoint when a write fails.
    torn = tmp_path / "00_torn.pkl"
    host_dump(previous, str(torn))
    with pytest.raises(RuntimeError, match="injected"):
        host_dump({**previous, 50: Bomb()}, str(torn))
    gc.collect()  # the host leaves its file object open: let it close
    with pytest.raises((EOFError, pickle.UnpicklingError)):
        pickle.loads(torn.read_bytes())

    checkpoint.install(inference, mp_util)
    checkpoint.install(inference, mp_util)  # idempotent: the host's dump is wrapped once
    assert inference.dump.keywords["write"] is host_dump and inference._echosafe_host_dump is host_dump
    for module, name in ((inference, "01_MMSafetyBenchPP_Demo.pkl"), (mp_util, "M_D_checkpoint.pkl")):
        path = tmp_path / name
        module.dump(previous, str(path))
        with pytest.raises(RuntimeError, match="injected"):
            module.dump({**previous, 50: Bomb()}, str(path))
        assert pickle.loads(path.read_bytes()) == previous
        module.dump({**previous, 50: "answer 50"}, str(path))
        assert len(pickle.loads(path.read_bytes())) == 51
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00_torn.pkl",
        "01_MMSafetyBenchPP_Demo.pkl",
        "M_D_checkpoint.pkl",
    ]


def test_other_formats_go_through_the_host_writer(host_modules, tmp_path: Path) -> None:
    import pandas as pd

    inference, mp_util = host_modules
    checkpoint.install(inference, mp_util)
    frame = pd.DataFrame({"index": [1, 2], "prediction": ["a", "b"]})
    inference.dump(frame, str(tmp_path / "M_D.tsv"))
    assert pd.read_csv(tmp_path / "M_D.tsv", sep="\t").equals(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["M_D.tsv"]


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".01_D.tmp999.pkl").write_bytes(b"left by a killed writer")
    checkpoint.atomic_dump({1: "a"}, str(tmp_path / "01_D.pkl"), write=_plain_pickle)
    assert [p.name for p in tmp_path.iterdir()] == ["01_D.pkl"]


def _plain_pickle(data: object, path: str) -> None:
    with open(path, "wb") as fh:
        pickle.dump(data, fh)


CHILD = textwrap.dedent(
    """
    import pickle, sys
    from vlmeval_echosafe.vlmevalkit.checkpoint import atomic_dump

    def host_dump_pkl(data, pth):  # the host's writer: vlmeval.smp.file.dump for .pkl
        pickle.dump(data, open(pth, "wb"))

    path, n = sys.argv[1], 0
    while True:
        n += 100
        atomic_dump({i: "x" * 2000 for i in range(n)}, path, write=host_dump_pkl)
        print(n, flush=True)
    """
)


def test_sigkill_during_checkpoint_writes_leaves_a_readable_checkpoint(tmp_path: Path) -> None:
    path, rng = tmp_path / "01_D.pkl", np.random.default_rng(0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env)
        proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        written = [100] + [int(x) for x in out.split()]
        data = pickle.loads(path.read_bytes())  # never torn
        assert len(data) in (written[-1], written[-1] + 100)  # the last completed write, or the one after it
