"""EchoSafe memory bank: exact retrieval vs numpy brute force, exclusion, persistence, crash safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from vlmeval_echosafe.memory import BankError, EncoderMismatchError, MemoryBank, gpu_available
from vlmeval_echosafe.memory import index as memindex

DIM = 16
N = 200
ENC = {"text": "minilm:all-MiniLM-L6-v2", "image": "inner:tiny-qwen2vl-v1"}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def insight(i: int) -> dict:
    return {
        "scenario": f"s{i}",
        "safety_signals": [f"sig{i}"],
        "decision": "safe" if i % 2 else "unsafe",
        "justification": f"j{i}",
    }


def build(vectors: np.ndarray) -> MemoryBank:
    bank = MemoryBank(vectors.shape[1], ENC)
    for i, v in enumerate(vectors):
        assert bank.add(v, insight(i), {"i": i, "group": i % 5}) == i
    return bank


def brute(vectors: np.ndarray, metas: list[dict], q: np.ndarray, k: int, exclude=None) -> list[tuple[int, float]]:
    """Reference top-k: similarity desc, ties by id asc, excluded entries dropped."""
    sims = vectors.astype(np.float64) @ q.astype(np.float64)
    order = np.lexsort((np.arange(len(sims)), -sims))
    kept = [int(i) for i in order if exclude is None or not exclude(metas[i])]
    return [(i, float(sims[i])) for i in kept[:k]]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return unit(rng, N), unit(rng, 8)


@pytest.fixture()
def bank(data) -> MemoryBank:
    return build(data[0])


def assert_same(hits, expected) -> None:
    assert [h.id for h in hits] == [i for i, _ in expected]
    np.testing.assert_allclose([h.similarity for h in hits], [s for _, s in expected], atol=1e-5)


EXCLUDES = {
    "none": None,
    "group0": lambda m: m["group"] == 0,
    "all_but_3": lambda m: m["i"] not in (7, 70, 170),
}


@pytest.mark.parametrize("k", [0, 1, 5, 17, N, N + 50])
@pytest.mark.parametrize("name", list(EXCLUDES))
def test_search_matches_brute_force(bank, data, k, name) -> None:
    vectors, queries = data
    metas = [m for _, m in bank.entries()]
    for q in queries:
        hits = bank.search(q, k, exclude=EXCLUDES[name])
        assert_same(hits, brute(vectors, metas, q, k, EXCLUDES[name]))
        assert all(h.insight == insight(h.id) and h.meta["i"] == h.id for h in hits)


def test_ties_are_ordered_by_id_even_at_the_cut() -> None:
    rng = np.random.default_rng(1)
    others = unit(rng, 40)
    v = others[0]
    vectors = others.copy()
    dup_ids = [3, 11, 12, 25, 39]
    vectors[dup_ids] = v  # five exact ties with the query, plus id 0 itself
    bank = build(vectors)
    hits = bank.search(v, 3)
    assert [h.id for h in hits] == [0, 3, 11]
    assert len({h.similarity for h in hits}) == 1
    hits = bank.search(v, 4, exclude=lambda m: m["i"] in (0, 11))
    assert [h.id for h in hits] == [3, 12, 25, 39]


def test_exclusion_never_leaks_and_still_fills_k(bank, data) -> None:
    vectors, _ = data
    # The query is an excluded entry's own vector: the best matches are exactly the excluded ones.
    excluded_ids = set(range(0, N, 2))
    exclude = lambda m: m["i"] in excluded_ids  # noqa: E731
    for q in vectors[:10:2]:
        for k in (1, 5, 50, N // 2, N):
            hits = bank.search(q, k, exclude=exclude)
            assert not {h.id for h in hits} & excluded_ids
            assert len(hits) == min(k, N - len(excluded_ids))
    assert bank.search(vectors[0], 5, exclude=lambda m: True) == []


def test_random_is_seeded_and_respects_exclude(bank, data) -> None:
    vectors, queries = data
    exclude = EXCLUDES["group0"]
    draw = lambda seed, k: bank.random(k, np.random.default_rng(seed), queries[0], exclude=exclude)  # noqa: E731
    a, b, c = draw(5, 10), draw(5, 10), draw(6, 10)
    assert [h.id for h in a] == [h.id for h in b]
    assert [h.id for h in a] != [h.id for h in c]
    assert len({h.id for h in a}) == 10 and all(h.id % 5 != 0 for h in a)
    for h in a:
        assert h.similarity == pytest.approx(float(vectors[h.id] @ queries[0]), abs=1e-5)
        assert h.insight == insight(h.id)
    assert [h.similarity for h in a] == sorted((h.similarity for h in a), reverse=True)
    everything = draw(0, N)
    assert sorted(h.id for h in everything) == [i for i in range(N) if i % 5]


@pytest.mark.parametrize(
    "key",
    [
        np.ones(DIM - 1) / np.sqrt(DIM - 1),
        np.ones((1, DIM)) / np.sqrt(DIM),
        np.ones(DIM),
        np.full(DIM, np.nan),
        np.r_[np.inf, np.zeros(DIM - 1)],
        np.zeros(DIM),
    ],
)
def test_add_and_search_reject_bad_keys(key) -> None:
    bank = MemoryBank(DIM, ENC)
    with pytest.raises(ValueError):
        bank.add(key, insight(0), {})
    with pytest.raises(ValueError):
        bank.search(key, 1)
    assert len(bank) == 0


def test_add_accepts_small_norm_error_and_rejects_non_json(data) -> None:
    bank = MemoryBank(DIM, ENC)
    bank.add(data[0][0] * 1.0005, insight(0), {})
    with pytest.raises(ValueError, match="insight"):
        bank.add(data[0][1], {"scenario": {1, 2}}, {})
    with pytest.raises(ValueError, match="meta"):
        bank.add(data[0][1], insight(1), ["not", "a", "dict"])
    assert len(bank) == 1


def snapshots(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("snap-"))


def test_save_load_round_trip(bank, data, tmp_path) -> None:
    root = tmp_path / "bank"
    assert not MemoryBank.exists(root)
    bank.save(root)
    bank.save(root)
    assert MemoryBank.exists(root) and len(snapshots(root)) == 1
    loaded = MemoryBank.load(root, encoders=ENC)
    assert (loaded.dim, loaded.encoders, len(loaded)) == (DIM, ENC, N)
    assert loaded.entries() == bank.entries()
    for q in data[1]:
        exclude = EXCLUDES["group0"]
        assert loaded.search(q, 7, exclude=exclude) == bank.search(q, 7, exclude=exclude)
    manifest = json.loads((root / snapshots(root)[0] / "manifest.json").read_text())
    assert (manifest["format"], manifest["count"], manifest["index"]) == ("echosafe-bank", N, "IndexFlatIP")
    empty = MemoryBank(DIM, ENC)
    empty.save(tmp_path / "empty")
    assert len(MemoryBank.load(tmp_path / "empty")) == 0


def test_crash_during_pointer_swap_keeps_previous_bank(bank, data, tmp_path, monkeypatch) -> None:
    root = tmp_path / "bank"
    bank.save(root)
    bank.add(data[1][0], insight(N), {"i": N, "group": 0})
    bank.save(root)  # entry N goes to the log

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    bank.add(data[1][1], insight(N + 1), {"i": N + 1, "group": 1})
    with monkeypatch.context() as m:
        m.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="simulated"):
            bank.compact(root)
    assert len(MemoryBank.load(root)) == N + 1  # the previous snapshot and its log
    bank.save(root)  # the failed compaction changed nothing saved: the log takes entry N + 1
    assert MemoryBank.load(root).entries() == bank.entries()
    bank.compact(root)
    assert len(MemoryBank.load(root)) == N + 2 and len(snapshots(root)) == 1


def test_crash_while_writing_snapshot_keeps_previous_bank(bank, tmp_path, monkeypatch) -> None:
    root = tmp_path / "bank"
    bank.save(root)
    bank.truncate(lambda m: m["i"] < 10)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(faiss, "write_index", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            bank.save(root)
    assert len(MemoryBank.load(root)) == N
    # A half-written snapshot left behind is never reused and is cleaned up by the next save.
    leftover = snapshots(root)
    assert len(leftover) == 2
    bank.save(root)
    assert len(MemoryBank.load(root)) == 10
    assert len(snapshots(root)) == 1 and snapshots(root)[0] not in leftover


def current_snapshot(root: Path) -> Path:
    return root / (root / "CURRENT").read_text().strip()


def corrupt_count(snap: Path) -> str:
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["count"] += 1
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return "index.faiss"  # the first file checked against the manifest's count


def truncate_index(snap: Path) -> str:
    data = (snap / "index.faiss").read_bytes()
    (snap / "index.faiss").write_bytes(data[: len(data) // 2])
    return "index.faiss"


def garbage_line(snap: Path) -> str:
    lines = (snap / "insights.jsonl").read_text().splitlines()
    lines[3] = '{"id": 3, "insight": {'
    (snap / "insights.jsonl").write_text("\n".join(lines) + "\n")
    return "insights.jsonl"


def short_insights(snap: Path) -> str:
    lines = (snap / "insights.jsonl").read_text().splitlines()
    (snap / "insights.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    return "insights.jsonl"


def swapped_ids(snap: Path) -> str:
    lines = (snap / "insights.jsonl").read_text().splitlines()
    lines[4], lines[5] = lines[5], lines[4]
    (snap / "insights.jsonl").write_text("\n".join(lines) + "\n")
    return "insights.jsonl"


def missing_current(snap: Path) -> str:
    (snap.parent / "CURRENT").unlink()
    return "CURRENT"


def dangling_current(snap: Path) -> str:
    (snap.parent / "CURRENT").write_text("snap-999999\n")
    return "CURRENT"


def bad_manifest(snap: Path) -> str:
    (snap / "manifest.json").write_text("{not json")
    return "manifest.json"


CORRUPTIONS = [
    corrupt_count,
    truncate_index,
    garbage_line,
    short_insights,
    swapped_ids,
    missing_current,
    dangling_current,
    bad_manifest,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_corrupt_bank_raises_bank_error_naming_the_file(bank, tmp_path, corrupt) -> None:
    root = tmp_path / "bank"
    bank.save(root)
    filename = corrupt(current_snapshot(root))
    with pytest.raises(BankError, match=filename):
        MemoryBank.load(root)


def test_count_mismatch_message_shows_both_numbers(bank, tmp_path) -> None:
    root = tmp_path / "bank"
    bank.save(root)
    short_insights(current_snapshot(root))
    with pytest.raises(BankError, match=f"{N - 1} entries.*count {N}"):
        MemoryBank.load(root)


def test_encoder_mismatch(bank, tmp_path) -> None:
    root = tmp_path / "bank"
    bank.save(root)
    other = {**ENC, "text": "minilm:other"}
    with pytest.raises(EncoderMismatchError) as err:
        MemoryBank.load(root, encoders=other)
    msg = str(err.value)
    assert "minilm:all-MiniLM-L6-v2" in msg and "minilm:other" in msg and "empty" in msg
    assert isinstance(err.value, BankError)
    assert len(MemoryBank.load(root, encoders=dict(ENC))) == N


def test_truncate_keeps_order_and_exact_search(bank, data) -> None:
    vectors, queries = data
    assert bank.truncate(lambda m: True) == 0
    keep = lambda m: m["i"] % 3 != 0  # noqa: E731
    kept_ids = [i for i in range(N) if keep({"i": i})]
    assert bank.truncate(keep) == N - len(kept_ids)
    assert [m["i"] for _, m in bank.entries()] == kept_ids
    kept = vectors[kept_ids]
    metas = [m for _, m in bank.entries()]
    for q in queries:
        assert_same(bank.search(q, 9), brute(kept, metas, q, 9))
    assert bank.add(queries[0], insight(N), {"i": N, "group": 0}) == len(kept_ids)


def test_gpu_detection(monkeypatch) -> None:
    assert bank_on_cpu_here()
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    assert not gpu_available()
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert not gpu_available()
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert gpu_available()


def bank_on_cpu_here() -> bool:
    if gpu_available():
        pytest.skip("this machine's faiss sees a GPU")
    with pytest.raises(RuntimeError, match="GPU"):
        MemoryBank(DIM, ENC, use_gpu=True)
    return not MemoryBank(DIM, ENC).on_gpu


def test_gpu_branch_only_when_faiss_reports_gpus(data, tmp_path, monkeypatch) -> None:
    calls: list[str] = []

    class FakeResources:
        pass

    def cpu_to_gpu(res, device, index):
        assert isinstance(res, FakeResources) and device == 0
        calls.append("to_gpu")
        return index

    def gpu_to_cpu(index):
        calls.append("to_cpu")
        return index

    memindex._gpu_resources.cache_clear()
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", gpu_to_cpu, raising=False)
    try:
        assert not MemoryBank(DIM, ENC, use_gpu=False).on_gpu and calls == []
        bank = build(data[0][:20])
        assert bank.on_gpu and calls == ["to_gpu"]
        bank.save(tmp_path / "bank")
        assert calls == ["to_gpu", "to_cpu"]
        loaded = MemoryBank.load(tmp_path / "bank")
        assert loaded.on_gpu and calls[-1] == "to_gpu"
        assert loaded.search(data[1][0], 3) == bank.search(data[1][0], 3)
    finally:
        memindex._gpu_resources.cache_clear()


class AdversarialTies:
    """An index that breaks ties by id descending (faiss promises no tie order, GPU builds differ)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = np.round(self.vectors @ query[0], 5).astype(np.float32)  # BLAS rounding differs per row
        order = np.lexsort((-np.arange(len(sims)), -sims))[:k]
        return sims[order][None, :], order[None, :]


def test_ties_by_id_whatever_order_the_index_returns() -> None:
    rng = np.random.default_rng(2)
    vectors = unit(rng, 30)
    vectors[[4, 9, 17, 22, 29]] = vectors[1]
    bank = build(vectors)
    bank._index = AdversarialTies(vectors)
    assert [h.id for h in bank.search(vectors[1], 3)] == [1, 4, 9]
    assert [h.id for h in bank.search(vectors[1], 2, exclude=lambda m: m["i"] == 4)] == [1, 9]


class CountingIndex:
    def __init__(self, index) -> None:
        self.index, self.calls = index, 0

    def search(self, query: np.ndarray, k: int):
        self.calls += 1
        return self.index.search(query, k)


def test_search_asks_the_index_once_without_ties(bank, data) -> None:
    counting = CountingIndex(bank._index)
    bank._index = counting
    bank.search(data[1][0], 5)
    bank.search(data[1][1], 5, exclude=EXCLUDES["group0"])
    assert counting.calls == 2


def test_update_meta_changes_only_meta_and_persists(bank, data, tmp_path) -> None:
    before = bank.search(data[1][0], 5)
    with pytest.raises(ValueError, match="meta"):
        bank.update_meta(lambda m: None)
    assert bank.entries()[0][1] == {"i": 0, "group": 0}
    bank.update_meta(lambda m: {**m, "warm": True})
    after = bank.search(data[1][0], 5, exclude=lambda m: not m["warm"])
    strip = lambda hits: [(h.id, h.similarity, h.insight) for h in hits]  # noqa: E731
    assert strip(after) == strip(before)
    bank.save(tmp_path / "bank")
    assert all(m["warm"] for _, m in MemoryBank.load(tmp_path / "bank").entries())


# ---- approximate index past a size threshold ---------------------------------------------------------------

APPROX_AT = 2000


def clustered(rng: np.random.Generator, n: int, dim: int = 32, clusters: int = 64, spread: float = 0.5):
    centres = unit(rng, clusters, dim)
    x = centres[rng.integers(0, clusters, n)] + spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_twins(vectors: np.ndarray, **kwargs) -> MemoryBank:
    bank = MemoryBank(vectors.shape[1], ENC, **kwargs)
    for i, v in enumerate(vectors):
        bank.add(v, insight(i), {"i": i, "group": i % 5, "dataset": "d" if i % 3 else "e", "pair_id": i // 2})
    return bank


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = clustered(rng, APPROX_AT + 300 + 40)
    return x[:-40], x[-40:]


@pytest.fixture(scope="module")
def approx_bank(clustered_data) -> MemoryBank:
    return build_twins(clustered_data[0], approx_threshold=APPROX_AT, index_meta=("dataset", "pair_id"))


def recall_at(bank: MemoryBank, vectors: np.ndarray, queries: np.ndarray, k: int = 5) -> float:
    metas = [m for _, m in bank.entries()]
    got = [len({h.id for h in bank.search(q, k)} & {i for i, _ in brute(vectors, metas, q, k)}) / k for q in queries]
    return float(np.mean(got))


def test_switches_once_to_approximate_with_good_recall(approx_bank, clustered_data) -> None:
    vectors, queries = clustered_data
    assert approx_bank.index_kind == "IndexIVFFlat" and isinstance(approx_bank._index, faiss.IndexIVFFlat)
    assert approx_bank._index.ntotal == len(vectors) and approx_bank._index.nprobe == 16
    assert approx_bank._index.nlist == memindex.nlist_for(APPROX_AT)  # trained on what was there then
    assert recall_at(approx_bank, vectors, queries) >= 0.95
    for q in queries[:5]:  # still always k hits, similarities are exact
        hits = approx_bank.search(q, 5)
        assert len(hits) == 5
        for h in hits:
            assert h.similarity == pytest.approx(float(vectors[h.id] @ q), abs=1e-5)


def test_below_threshold_and_none_stay_exact(clustered_data) -> None:
    vectors, queries = clustered_data
    small = build_twins(vectors[: APPROX_AT - 1], approx_threshold=APPROX_AT)
    never = build_twins(vectors, approx_threshold=None)
    assert small.index_kind == never.index_kind == "IndexFlatIP"
    metas = [m for _, m in never.entries()]
    for q in queries[:5]:
        assert_same(never.search(q, 7), brute(vectors, metas, q, 7))
    with pytest.raises(ValueError):
        MemoryBank(DIM, ENC, approx_threshold=0)
    with pytest.raises(ValueError):
        MemoryBank(DIM, ENC, nprobe=0)


def test_adding_after_the_switch_never_rebuilds(clustered_data, monkeypatch) -> None:
    vectors, queries = clustered_data
    calls: list[int] = []
    real = memindex.new_approx_index

    def counting(vecs, nprobe=memindex.DEFAULT_NPROBE):
        calls.append(len(vecs))
        return real(vecs, nprobe)

    monkeypatch.setattr(memindex, "new_approx_index", counting)
    bank = build_twins(vectors[: APPROX_AT - 1], approx_threshold=APPROX_AT)
    assert calls == []
    index_before = None
    for i, v in enumerate(vectors[APPROX_AT - 1 :], start=APPROX_AT - 1):
        bank.add(v, insight(i), {"i": i})
        index_before = index_before or bank._index
    assert calls == [APPROX_AT] and bank._index is index_before
    assert bank._index.ntotal == len(vectors) == len(bank)
    assert recall_at(bank, vectors, queries) >= 0.95


def test_exclude_ids_equals_the_callable_path(approx_bank, clustered_data) -> None:
    vectors, queries = clustered_data
    small = build_twins(vectors[:300], index_meta=("dataset", "pair_id"))
    for bank in (small, approx_bank):
        for j, q in enumerate(queries[:10]):
            twin = bank.ids_where({"pair_id": j})
            assert twin == {2 * j, 2 * j + 1}
            for k in (1, 5, 20):
                by_callable = bank.search(q, k, exclude=lambda m, j=j: m["pair_id"] == j)
                assert bank.search(q, k, exclude_ids=twin) == by_callable
            other = bank.ids_where({"dataset": "e"})
            assert bank.ids_where({"dataset": "e", "pair_id": j}) == {i for i in twin if i % 3 == 0}
            assert bank.ids_where({"pair_id": j, "group": (2 * j) % 5}) == {2 * j}  # unindexed key: checked
            assert other == {i for i in range(len(bank)) if i % 3 == 0}
            both = bank.search(q, 5, exclude=lambda m: m["dataset"] == "e", exclude_ids=twin)
            assert both == bank.search(q, 5, exclude=lambda m, j=j: m["dataset"] == "e" or m["pair_id"] == j)
            assert not {h.id for h in both} & (twin | other)
        # The query's own vector excluded: its best match is gone, k is still filled.
        hits = bank.search(vectors[4], 5, exclude_ids={4, 10**9, -1})
        assert 4 not in {h.id for h in hits} and len(hits) == 5
        assert bank.ids_where({"pair_id": "no such"}) == set() == bank.ids_where({"pair_id": 1, "x": 1})
        with pytest.raises(KeyError):
            bank.ids_where({"group": 0})
    rng = np.random.default_rng(3)
    a = approx_bank.random(5, rng, queries[0], exclude_ids={0, 1, 2})
    assert len(a) == 5 and not {h.id for h in a} & {0, 1, 2}


def test_meta_index_follows_update_meta_and_truncate(clustered_data) -> None:
    bank = build_twins(clustered_data[0][:30], index_meta=("pair_id",))
    bank.update_meta(lambda m: {**m, "pair_id": m["pair_id"] + 100})
    assert bank.ids_where({"pair_id": 0}) == set() and bank.ids_where({"pair_id": 100}) == {0, 1}
    bank.truncate(lambda m: m["i"] >= 10)
    assert bank.ids_where({"pair_id": 105}) == {0, 1}  # ids renumbered


def test_approximate_bank_save_load_round_trip(approx_bank, clustered_data, tmp_path) -> None:
    vectors, queries = clustered_data
    root = tmp_path / "bank"
    approx_bank.save(root)
    snap = current_snapshot(root)
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["index"] == "IndexIVFFlat" and manifest["count"] == len(vectors)
    assert manifest["index_params"] == {"nlist": memindex.nlist_for(APPROX_AT), "nprobe": 16, "metric": "inner_product"}
    assert np.array_equal(np.load(snap / "vectors.npy", allow_pickle=False), vectors)
    loaded = MemoryBank.load(root, encoders=ENC, index_meta=("pair_id",))
    assert loaded.index_kind == "IndexIVFFlat" and loaded.entries() == approx_bank.entries()
    for q in queries[:10]:
        assert loaded.search(q, 5) == approx_bank.search(q, 5)
        assert loaded.search(q, 5, exclude_ids=loaded.ids_where({"pair_id": 3})) == approx_bank.search(
            q, 5, exclude_ids={6, 7}
        )
    assert MemoryBank.load(root, nprobe=4)._index.nprobe == 4
    loaded.add(queries[0], insight(len(vectors)), {"i": len(vectors)})  # adds to the loaded trained index
    assert loaded._index.ntotal == len(vectors) + 1
    # An exact snapshot carries no vectors.npy (the flat index holds them).
    small = tmp_path / "small"
    build(vectors[:50]).save(small)
    assert not (current_snapshot(small) / "vectors.npy").exists()


def drop_vectors(snap: Path) -> str:
    (snap / "vectors.npy").unlink()
    return "vectors.npy"


def short_vectors(snap: Path) -> str:
    v = np.load(snap / "vectors.npy")
    np.save(snap / "vectors.npy", v[:-1])
    return "vectors.npy"


def pickled_vectors(snap: Path) -> str:
    np.save(snap / "vectors.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return "vectors.npy"


def flat_named_approx(snap: Path) -> str:
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["index"] = "IndexFlatIP"
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return "index.faiss"


def unknown_index(snap: Path) -> str:
    manifest = json.loads((snap / "manifest.json").read_text())
    manifest["index"] = "IndexHNSWFlat"
    (snap / "manifest.json").write_text(json.dumps(manifest))
    return "manifest.json"


@pytest.mark.parametrize(
    "corrupt",
    [drop_vectors, short_vectors, pickled_vectors, flat_named_approx, unknown_index, corrupt_count],
    ids=lambda f: f.__name__,
)
def test_corrupt_approximate_bank_raises_bank_error(approx_bank, tmp_path, corrupt) -> None:
    root = tmp_path / "bank"
    approx_bank.save(root)
    filename = corrupt(current_snapshot(root))
    with pytest.raises(BankError, match=filename):
        MemoryBank.load(root)


def test_truncate_after_the_switch(clustered_data) -> None:
    vectors, queries = clustered_data
    bank = build_twins(vectors, approx_threshold=APPROX_AT)
    # Keeps enough to stay approximate: retrained on what is left.
    assert bank.truncate(lambda m: m["i"] % 10 != 0) == (len(vectors) + 9) // 10
    kept_ids = [i for i in range(len(vectors)) if i % 10 != 0]
    assert len(bank) == len(kept_ids) >= APPROX_AT and bank.index_kind == "IndexIVFFlat"
    assert bank._index.ntotal == len(bank) and [m["i"] for _, m in bank.entries()] == kept_ids
    assert recall_at(bank, vectors[kept_ids], queries) >= 0.95
    # Cut below the threshold: back to exact search, exactly as brute force.
    assert bank.truncate(lambda m: m["i"] < 500) > 0
    kept = [i for i in kept_ids if i < 500]
    assert bank.index_kind == "IndexFlatIP" and len(bank) == len(kept)
    metas = [m for _, m in bank.entries()]
    for q in queries[:5]:
        assert_same(bank.search(q, 9), brute(vectors[kept], metas, q, 9))
    assert bank.add(queries[0], insight(0), {"i": -1}) == len(kept)


def test_approximate_search_falls_back_when_probed_lists_run_short(approx_bank, clustered_data) -> None:
    vectors, queries = clustered_data
    approx_bank.set_nprobe(1)
    try:
        # Excluding most of the bank leaves too few candidates in one probed list: the answer is still
        # complete and exact.
        keep = set(range(0, len(vectors), 97))
        drop = set(range(len(vectors))) - keep
        metas = [m for _, m in approx_bank.entries()]
        for q in queries[:5]:
            hits = approx_bank.search(q, 10, exclude_ids=drop)
            assert_same(hits, brute(vectors, metas, q, 10, exclude=lambda m: m["i"] not in keep))
    finally:
        approx_bank.set_nprobe(16)


def test_approximate_index_returns_the_exact_top_k_on_a_small_bank(clustered_data) -> None:
    """On a small bank the IVF index gives exactly the exact search's top-k (ids and similarities): at the
    default nprobe on these clustered keys, and always once every list is probed."""
    vectors, queries = clustered_data
    small = vectors[:300]
    bank = build_twins(small, approx_threshold=None)
    exact = [bank.search(q, 5) for q in queries]
    assert bank.make_approximate() and bank.index_kind == "IndexIVFFlat"
    metas = [m for _, m in bank.entries()]
    for q, before in zip(queries, exact, strict=True):
        assert_same(bank.search(q, 5), brute(small, metas, q, 5))
        assert [h.id for h in bank.search(q, 5)] == [h.id for h in before]
    bank.set_nprobe(int(bank._index.nlist))
    for q in queries:
        assert_same(bank.search(q, 5), brute(small, metas, q, 5))


def test_make_approximate_and_nprobe(clustered_data) -> None:
    vectors, queries = clustered_data
    bank = build_twins(vectors[:500], approx_threshold=None)
    assert not MemoryBank(DIM, ENC).make_approximate()
    assert bank.make_approximate() and not bank.make_approximate()
    assert bank.index_kind == "IndexIVFFlat"
    bank.set_nprobe(4)
    assert bank._index.nprobe == 4
    with pytest.raises(ValueError):
        bank.set_nprobe(0)


@pytest.mark.parametrize("cut", [0, 10, 60, 127, 128, 500, -4])
@pytest.mark.parametrize("garbage", [b"", b"\x93NUMPY\x01\x00{'descr': '<f4', 'shape': (", b"\xff" * 64])
def test_fuzzed_vectors_file_gives_bank_error_only(approx_bank, tmp_path, cut, garbage) -> None:
    root = tmp_path / "bank"
    approx_bank.save(root)
    path = current_snapshot(root) / "vectors.npy"
    data = path.read_bytes()
    path.write_bytes(data[:cut] + garbage + data[cut + len(garbage) :] if cut >= 0 else data[:cut])
    try:
        loaded = MemoryBank.load(root)
    except BankError as err:
        assert "vectors.npy" in str(err)
    else:
        assert len(loaded) == len(approx_bank)


def test_gpu_branch_moves_the_approximate_index_too(data, tmp_path, monkeypatch) -> None:
    moved: list[str] = []

    class FakeResources:
        pass

    def cpu_to_gpu(res, device, index):
        moved.append(type(index).__name__)
        return index

    memindex._gpu_resources.cache_clear()
    monkeypatch.setattr(faiss, "StandardGpuResources", FakeResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: index, raising=False)
    try:
        bank = MemoryBank(DIM, ENC, approx_threshold=60)
        for i, v in enumerate(data[0][:100]):
            bank.add(v, insight(i), {"i": i})
        # Trained on the CPU, then moved: GpuIndexIVFFlat in a GPU build; later adds go to that index.
        assert moved == ["IndexFlatIP", "IndexIVFFlat"] and bank._index.ntotal == 100
        bank.save(tmp_path / "bank")
        assert MemoryBank.load(tmp_path / "bank").index_kind == "IndexIVFFlat" and moved[-1] == "IndexIVFFlat"
    finally:
        memindex._gpu_resources.cache_clear()
