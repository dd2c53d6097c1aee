"""Fuzzed bad data: the dataset and bank loaders either accept the input or raise their own error naming the
file/row — never a traceback from deep inside pandas, PIL or faiss, never a partial result."""

import shutil

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
