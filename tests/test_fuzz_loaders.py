"""Fuzzed bad data: the dataset and bank loaders either accept the input or raise their own error naming the
file/row — never a traceback from deep inside pandas, PIL or faiss, never a partial result (the bank's log may
lose its torn last batch, with a warning, and nothing else)."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmeval_echosafe.datasets.config import load_config
from vlmeval_echosafe.datasets.demo import load_demo_frame
from vlmeval_echosafe.datasets.release import load_release
from vlmeval_echosafe.datasets.validate import DatasetError, validate_frame
from vlmeval_echosafe.memory import BankError, MemoryBank
from vlmeval_echosafe.memory import log as banklog
from vlmeval_echosafe.memory.persist import CompactionPolicy

DEMO = load_demo_frame()
CELL = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.integers(-5, 500),
    st.floats(allow_nan=True),
    st.sampled_from(["", "nan", "0", "iVBORw0KGgo" * 8, "Fraud", "safe", "GenOCR", "P1"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(DEMO) - 1), st.sampled_from(list(DEMO.columns)), CELL), min_size=1, max_size=4
    ),
    drop=st.lists(st.integers(0, len(DEMO) - 1), max_size=3),
)
def test_mutated_rows_give_dataset_errors_only(edits, drop):
    frame = DEMO.copy().astype(object)
    for row, col, value in edits:
        frame.at[row, col] = value
    frame = frame.drop(index=sorted(set(drop)))
    try:
        out = validate_frame(frame, "fuzz.tsv", check_images=True)
    except DatasetError as err:
        assert "fuzz.tsv" in str(err)
    else:
        assert len(out) == len(frame)


@pytest.fixture(scope="module")
def saved_bank(tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "bank"
    rng = np.random.default_rng(0)
    bank = MemoryBank(8, {"text": "t", "image": "none"})
    for i in range(5):
        v = rng.normal(size=8).astype(np.float32)
        bank.add(v / np.linalg.norm(v), {"scenario": f"s{i}"}, {"row_index": str(i)})
    bank.save(path)
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["manifest.json", "insights.jsonl", "index.faiss", "CURRENT"]),
    cut=st.floats(0, 1),
    garbage=st.binary(max_size=40),
)
def test_corrupted_bank_files_give_bank_errors_only(saved_bank, tmp_path_factory, target, cut, garbage):
    path = tmp_path_factory.mktemp("fz") / "bank"
    shutil.copytree(saved_bank, path)
    snap = path / (path / "CURRENT").read_text().strip()
    file = path / "CURRENT" if target == "CURRENT" else snap / target
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * cut)] + garbage)
    try:
        bank = MemoryBank.load(path)
    except BankError as err:
        assert str(path) in str(err)
    else:
        assert len(bank) == 5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 0.95), fmt=st.sampled_from(["jsonl", "parquet"]))
def test_truncated_release_rows_give_dataset_errors_only(tmp_path_factory, monkeypatch, cut, fmt):
    root = tmp_path_factory.mktemp("rel")
    rows = pd.DataFrame(
        [
            {
                "category": "Fraud",
                "mode": "Gen",
                "label": lab,
                "id": str(q),
                "image": "x.png",
                "question": f"q {q} {lab}",
            }
            for q in range(20)
            for lab in ("unsafe", "safe")
        ]
    )
    name = "test.jsonl" if fmt == "jsonl" else "data.parquet"
    if fmt == "jsonl":
        rows.to_json(root / name, orient="records", lines=True)
    else:
        rows.to_parquet(root / name)
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: int(len(data) * cut)])
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(root))
    cfg = dict(load_config()["release"], columns={**load_config()["release"]["columns"], "question": "question"})
    try:
        frame, source = load_release(cfg, ["Gen"])
        validate_frame(frame, ", ".join(source.row_files))
    except DatasetError as err:
        assert str(root) in str(err)


@pytest.fixture(scope="module")
def logged_bank(tmp_path_factory):
    """A bank of 2 snapshot entries and log batches of 1, 3, 1 and 4 entries; the log's records as
    (offset, bytes, batch_start), read from their headers."""
    path = tmp_path_factory.mktemp("logged") / "bank"
    rng = np.random.default_rng(1)
    bank = MemoryBank(8, {"text": "t"}, compaction=CompactionPolicy(min_bytes=1 << 40))
    for batch in (2, 1, 3, 1, 4):
        for _ in range(batch):
            v = rng.normal(size=8).astype(np.float32)
            bank.add(v / np.linalg.norm(v), {"scenario": "é" * len(bank)}, {"row_index": str(len(bank))})
        bank.save(path)
    log = path / (path / "CURRENT").read_text().strip() / "log.bin"
    data, records, off = log.read_bytes(), [], 0
    while off < len(data):
        _, batch_start, length, _ = banklog.HEADER.unpack_from(data, off)
        records.append((off, banklog.HEADER.size + length, batch_start))
        off += banklog.HEADER.size + length
    assert len(records) == 9 and off == len(data)
    return path, bank.entries(), records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["cut", "flip", "append"]),
    where=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
    garbage=st.binary(min_size=1, max_size=300),
)
def test_damaged_log_gives_its_exact_prefix_or_a_bank_error(logged_bank, tmp_path_factory, kind, where, flip, garbage):
    """Whatever happens to the log, the loader gives exactly what is left intact or names the damage: a cut or
    appended garbage loses at most the damaged tail (with a warning); a flipped byte in the last batch drops
    that batch from the flipped record on (warning); one anywhere before is a BankError naming file and offset."""
    saved, entries, records = logged_bank
    path = tmp_path_factory.mktemp("fzlog") / "bank"
    shutil.copytree(saved, path)
    log = path / (path / "CURRENT").read_text().strip() / "log.bin"
    data = bytearray(log.read_bytes())
    pos = int(where * len(data))
    hit = next(j for j, (off, size, _) in enumerate(records) if off <= pos < off + size)
    last_batch = records[-1][2]
    expect_error = False
    if kind == "cut":
        data = data[:pos]
        keep, damaged = hit, pos != records[hit][0]
    elif kind == "flip":
        data[pos] ^= flip
        keep, damaged, expect_error = hit, True, records[hit][2] < last_batch
    else:
        data += garbage
        keep, damaged = len(records), True
    log.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            bank = MemoryBank.load(path)
        except BankError as err:
            assert expect_error, err
            assert f"{log}: record at offset {records[hit][0]} is damaged" in str(err)
            return
    assert not expect_error
    assert bank.entries() == entries[: 2 + keep]
    torn = [w for w in caught if issubclass(w.category, banklog.TornTailWarning)]
    assert len(torn) == damaged and all(str(log) in str(w.message) for w in torn)
