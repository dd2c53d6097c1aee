"""The bank's append-only log: replay equals the in-memory bank, saves cost O(batch), torn tails are dropped with a
warning, damage elsewhere is a BankError, and crashes in an append or a compaction lose nothing saved."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

from vlmeval_echosafe.memory import BankError, MemoryBank
from vlmeval_echosafe.memory import log as banklog
from vlmeval_echosafe.memory.persist import CompactionPolicy

DIM = 16
ENC = {"text": "t", "image": "i"}
NEVER = CompactionPolicy(min_bytes=1 << 40)  # appends only: compaction never due
OFTEN = CompactionPolicy(ratio=0.5, min_bytes=0)
ROOT = Path(__file__).resolve().parents[1]


def key(i: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def add(bank: MemoryBank, i: int) -> None:
    bank.add(key(i, bank.dim), {"scenario": f"s{i}", "decision": "unsafe"}, {"i": i, "pair_id": i // 2})


def grow(bank: MemoryBank, root: Path, batches: list[int]) -> None:
    """Add ``batches[j]`` entries then save, for each j."""
    for size in batches:
        for _ in range(size):
            add(bank, len(bank))
        bank.save(root)


def current(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def layout(path: Path) -> list[tuple[int, int, int]]:
    """(offset, bytes, batch_start) of every record of an intact log."""
    data, out, off = path.read_bytes(), [], 0
    while off < len(data):
        _, batch_start, length, _ = banklog.HEADER.unpack_from(data, off)
        out.append((off, banklog.HEADER.size + length, batch_start))
        off += banklog.HEADER.size + length
    return out


def same_bank(loaded: MemoryBank, bank: MemoryBank) -> None:
    assert loaded.entries() == bank.entries()
    np.testing.assert_array_equal(loaded._vectors.view(), bank._vectors.view())
    assert loaded.index_kind == bank.index_kind and loaded._index.ntotal == len(bank)
    for q in range(1000, 1005):
        exclude = loaded.ids_where({"pair_id": 3}) if loaded.index_meta else set()
        assert loaded.search(key(q, bank.dim), 7, exclude_ids=exclude) == bank.search(
            key(q, bank.dim), 7, exclude_ids=exclude
        )


def load(root: Path, **kwargs) -> MemoryBank:
    """Load and fail on any warning: an intact bank loads silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return MemoryBank.load(root, **kwargs)


# ---- replay --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [NEVER, OFTEN], ids=["appends", "compactions"])
def test_replay_equals_the_in_memory_bank(tmp_path: Path, policy: CompactionPolicy) -> None:
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC, index_meta=("pair_id",), compaction=policy)
    for sizes in ([3], [1, 4], [0, 7, 1, 2]):
        grow(bank, root, sizes)
        loaded = load(root, index_meta=("pair_id",), compaction=policy)
        same_bank(loaded, bank)
    manifest = json.loads((current(root) / "manifest.json").read_text())
    log_records = len(layout(current(root) / "log.bin"))
    assert manifest["version"] == 2 and manifest["count"] + log_records == len(bank) == 18
    if policy is NEVER:
        assert (manifest["count"], log_records) == (3, 15)  # the first save wrote the snapshot, the others appended
    else:
        assert manifest["count"] > 0
    # The loaded bank goes on where the saved one stopped.
    grow(loaded, root, [2])
    for i in (18, 19):
        add(bank, i)
    same_bank(load(root), bank)


def test_a_save_appends_only_the_new_records(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC, compaction=NEVER)
    grow(bank, root, [50])
    snap = current(root)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in snap.iterdir() if p.name != "log.bin"}
    for batch in (1, 5):
        size = (snap / "log.bin").stat().st_size
        start = len(bank)
        grow(bank, root, [batch])
        expected = sum(len(banklog.encode(i, key(i), *bank.entries()[i], size)) for i in range(start, start + batch))
        assert (snap / "log.bin").stat().st_size == size + expected
    assert current(root) == snap
    assert before == {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in snap.iterdir() if p.name != "log.bin"}
    bank.save(root)  # nothing new: nothing written
    assert (snap / "log.bin").stat().st_size == size + expected


def test_compaction_is_due_by_size() -> None:
    policy = CompactionPolicy(ratio=1.0, min_bytes=100)
    assert not policy.due(99, 10) and policy.due(100, 10)
    assert not policy.due(500, 501) and policy.due(501, 501)
    with pytest.raises(ValueError):
        CompactionPolicy(ratio=0)


def test_save_to_another_folder_writes_a_snapshot_there(tmp_path: Path) -> None:
    bank = MemoryBank(DIM, ENC, compaction=NEVER)
    grow(bank, tmp_path / "a", [4, 2])
    grow(bank, tmp_path / "b", [3])
    assert json.loads((current(tmp_path / "b") / "manifest.json").read_text())["count"] == 9
    assert len(load(tmp_path / "a")) == 6 and len(load(tmp_path / "b")) == 9
    grow(bank, tmp_path / "a", [1])  # "a" no longer holds the last save: a full snapshot again
    same_bank(load(tmp_path / "a"), bank)


# ---- damage --------------------------------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[MemoryBank, Path, Path]:
    """A bank of 3 snapshot entries and 4 log batches of 1, 3, 1 and 4 entries."""
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC, compaction=NEVER)
    grow(bank, root, [3])
    grow(bank, root, [1, 3, 1, 4])
    return bank, root, current(root) / "log.bin"


@pytest.mark.parametrize("cut", [1, 19, 20, 21, 64, -1])
def test_torn_last_record_is_dropped_with_a_warning(saved, cut: int) -> None:
    bank, root, log = saved
    last_off, last_len, _ = layout(log)[-1]
    data = log.read_bytes()
    log.write_bytes(data[: last_off + cut] if cut > 0 else data[:cut])
    message = re.escape(f"{log}: dropped a torn last batch at offset {last_off} ")
    with pytest.warns(banklog.TornTailWarning, match=message):
        loaded = MemoryBank.load(root)
    assert loaded.entries() == bank.entries()[:-1]
    # The next save cuts the torn bytes off before appending: the log is clean again.
    add(loaded, len(loaded))
    loaded.save(root)
    assert load(root).entries() == loaded.entries() and len(loaded) == len(bank)


def test_garbage_after_the_last_record_is_dropped(saved) -> None:
    bank, root, log = saved
    size = log.stat().st_size
    with log.open("ab") as fh:
        fh.write(b"\0" * 4096)  # a file grown by a crash before its data reached the disk
    with pytest.warns(banklog.TornTailWarning, match=f"offset {size} "):
        assert MemoryBank.load(root).entries() == bank.entries()


@pytest.mark.parametrize("where", ["magic", "batch_start", "length", "crc", "key", "json"])
def test_damage_before_the_last_batch_is_a_bank_error(saved, where: str) -> None:
    _, root, log = saved
    off, length, _ = layout(log)[2]  # second record of the 3-record batch
    byte = {"magic": 1, "batch_start": 6, "length": 13, "crc": 18, "key": 30, "json": length - 3}[where]
    data = bytearray(log.read_bytes())
    data[off + byte] ^= 0x41
    log.write_bytes(bytes(data))
    with pytest.raises(BankError, match=re.escape(f"{log}: record at offset {off} is damaged")):
        MemoryBank.load(root)


def test_damage_inside_the_last_batch_drops_it_from_there(saved) -> None:
    """A crash may garble any byte of the unsynced last batch, not only its end."""
    bank, root, log = saved
    records = layout(log)
    off, _, batch_start = records[-3]  # second of the last batch's 4 records
    assert batch_start == records[-4][0]
    data = bytearray(log.read_bytes())
    data[off + 40 : off + 60] = bytes(20)
    log.write_bytes(bytes(data))
    with pytest.warns(banklog.TornTailWarning, match=f"offset {off} "):
        loaded = MemoryBank.load(root)
    assert loaded.entries() == bank.entries()[:-3]


def test_a_record_written_wrong_is_an_error_even_at_the_end(saved) -> None:
    bank, root, log = saved
    end = log.stat().st_size
    with log.open("ab") as fh:  # a well-formed record with the wrong id
        fh.write(banklog.encode(len(bank) + 5, key(0), {}, {}, end))
    with pytest.raises(BankError, match=re.escape(f"{log}: record at offset {end} must have id {len(bank)}, found")):
        MemoryBank.load(root)


def test_missing_log_is_a_bank_error(saved) -> None:
    _, root, log = saved
    log.unlink()
    with pytest.raises(BankError, match=re.escape(f"{log}: missing")):
        MemoryBank.load(root)


def test_version_1_bank_loads_and_is_rewritten_on_save(tmp_path: Path) -> None:
    """What the writer before the log left: manifest version 1, no log."""
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC)
    grow(bank, root, [5])
    snap = current(root)
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["version"] = 1
    del manifest["log"]
    (snap / "manifest.json").write_text(json.dumps(manifest))
    (snap / "log.bin").unlink()
    loaded = load(root)
    same_bank(loaded, bank)
    grow(loaded, root, [2])
    assert current(root) != snap and (current(root) / "log.bin").exists()
    for i in (5, 6):
        add(bank, i)
    same_bank(load(root), bank)


# ---- crashes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("written", [0.0, 0.1, 0.5, 0.99, 1.0, "holes"])
def test_crash_during_an_append_keeps_every_saved_entry(saved, written) -> None:
    """The log as a crash in the middle of a batch's write can leave it: a prefix of the batch's bytes, or the
    batch with a page that never reached the disk (zeros). Every entry saved before is there; of the unfinished
    batch, the whole records before the damage are kept (a prefix of the stream, as a resume expects)."""
    bank, root, log = saved
    end = log.stat().st_size
    records = [banklog.encode(len(bank) + j, key(100 + j), {}, {"j": j}, end) for j in range(3)]
    blob = b"".join(records)
    if written == "holes":
        blob, whole = blob[:100] + bytes(4096), 0
    else:
        blob = blob[: int(len(blob) * written)]
        whole = len(blob) // len(records[0])
    with log.open("ab") as fh:
        fh.write(blob)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = MemoryBank.load(root)
    assert loaded.entries() == bank.entries() + [({}, {"j": j}) for j in range(whole)]
    torn = len(blob) != whole * len(records[0])
    assert [w.category for w in caught] == ([banklog.TornTailWarning] if torn else [])
    grow(loaded, root, [2])  # the torn bytes are cut off before the next batch
    same_bank(load(root), loaded)


def test_crash_during_a_compaction_keeps_the_appended_entries(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC, compaction=CompactionPolicy(ratio=0.1, min_bytes=0))
    grow(bank, root, [10])
    for i in range(10, 16):
        add(bank, i)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(faiss, "write_index", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            bank.save(root)  # the log passes half the snapshot: the append is done, then compaction crashes
    same_bank(load(root), bank)
    bank.save(root)  # compaction is still due, and now succeeds
    assert json.loads((current(root) / "manifest.json").read_text())["count"] == 16
    same_bank(load(root), bank)


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from vlmeval_echosafe.memory import MemoryBank
    from vlmeval_echosafe.memory.persist import CompactionPolicy

    root, dim = Path(sys.argv[1]), 64
    policy = CompactionPolicy(ratio=0.5, min_bytes=0)

    def key(i):
        v = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
        return v / np.linalg.norm(v)

    if MemoryBank.exists(root):
        bank = MemoryBank.load(root, compaction=policy)
    else:
        bank = MemoryBank(dim, {"text": "t"}, compaction=policy)
    while True:
        for _ in range(1 + len(bank) % 5):
            i = len(bank)
            bank.add(key(i), {"scenario": "x" * (i % 300)}, {"i": i})
        bank.save(root)
        print(len(bank), flush=True)
    """
)


def test_sigkill_at_random_moments_loses_nothing_saved(tmp_path: Path) -> None:
    """A writer killed with SIGKILL anywhere (inside appends, fsyncs, compactions), then restarted from what it
    left, ends with entries 0..n-1 in order: nothing saved lost, nothing doubled."""
    root, rng = tmp_path / "bank", np.random.default_rng(0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    durable = 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        first = int(proc.stdout.readline())  # running (so it gets past any start-up)
        assert first > durable
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        saves = [first] + [int(x) for x in out.split()]
        durable = saves[-1]  # the last save that returned
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", banklog.TornTailWarning)
            loaded = MemoryBank.load(root)
        assert len(loaded) >= durable, err.decode()[-2000:]
        assert [m["i"] for _, m in loaded.entries()] == list(range(len(loaded)))
        np.testing.assert_array_equal(loaded._vectors.view(), [key(i, 64) for i in range(len(loaded))])
        durable = len(loaded)
    assert durable > 20


# ---- operations that rewrite the bank --------------------------------------------------------------------------


def test_resume_truncate_after_appends(saved) -> None:
    bank, root, _ = saved
    before, n = current(root), len(bank)
    assert bank.truncate(lambda m: m["i"] < 6) == n - 6
    bank.save(root)
    assert current(root) != before  # a new snapshot, not an append that would replay the dropped entries
    same_bank(load(root), bank)
    grow(bank, root, [2])
    loaded = load(root)
    same_bank(loaded, bank)
    assert [m["i"] for _, m in loaded.entries()] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_update_meta_after_appends(saved) -> None:
    bank, root, _ = saved
    bank.update_meta(lambda m: {**m, "origin": "warm"})
    bank.save(root)
    assert all(m["origin"] == "warm" for _, m in load(root).entries())


def test_switch_to_ivf_then_appends(tmp_path: Path) -> None:
    root = tmp_path / "bank"
    bank = MemoryBank(DIM, ENC, approx_threshold=300, compaction=NEVER, index_meta=("pair_id",))
    grow(bank, root, [250, 30])
    assert bank.index_kind == "IndexFlatIP"
    grow(bank, root, [40])  # the switch happens at entry 300 of this batch: the save writes an IVF snapshot
    assert bank.index_kind == "IndexIVFFlat"
    manifest = json.loads((current(root) / "manifest.json").read_text())
    assert (manifest["index"], manifest["count"]) == ("IndexIVFFlat", 320)
    grow(bank, root, [7, 3])  # appended to the log, added to the trained index on load
    assert len(layout(current(root) / "log.bin")) == 10
    same_bank(load(root, index_meta=("pair_id",)), bank)
    bank.set_nprobe(2)  # recorded in the manifest: the next save rewrites it
    bank.save(root)
    assert load(root)._index.nprobe == 2
