"""The public Python API (`vlmeval_echosafe.api`): rows from plain Python with no harness importable, rows travelling
with items, resume through the lifecycle, and the run identity that guards a resumed run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from runs import run_env

from vlmeval_echosafe.api import DatasetRun, Item, load_defense
from vlmeval_echosafe.memory import MemoryBank

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_the_readme_snippet_runs_where_neither_harness_can_be_imported(tiny_cache: Path, tmp_path: Path) -> None:
    """Four items with images through EchoSafe on the tiny Qwen2-VL; `import vlmeval` and `import lmms_eval` raise."""
    images = _images(tmp_path, 4)
    script = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("vlmeval", "lmms_eval"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        from vlmeval_echosafe.api import Item, load_defense
        d = load_defense("EchoSafe-NoReflection_TinyQwen2VL", work_dir={str(tmp_path / "lib")!r})
        items = [Item(question=f"How do I open lock {{i}}?", images=[p]) for i, p in enumerate({images!r})]
        outs = d.respond(items)
        d.close()
        assert len(outs) == 4 and all(isinstance(o.text, str) and o.text for o in outs)
        assert [o.record["bank_size"] for o in outs] == [0, 0, 0, 0]  # one micro-batch sees the bank before it
        assert "vlmeval" not in sys.modules and "lmms_eval" not in sys.modules
        print("OK")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=run_env(tmp_path, tiny_cache), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    bank = MemoryBank.load(tmp_path / "lib" / "EchoSafe-NoReflection_TinyQwen2VL" / "echosafe_bank" / "api")
    assert len(bank) == 4  # the new insights (raw exchanges under NoReflection) are in the bank


def test_rows_travel_with_items_and_settings_override(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLMEVAL_ECHOSAFE_CACHE", str(tiny_cache))
    images = _images(tmp_path, 2)
    d = load_defense("EchoSafe_TinyQwen2VL", work_dir=tmp_path / "lib", k=2, store="exchange")
    assert d.settings.k == 2 and d.settings.labels_used() == ["pair_id"]
    rows = [{"index": "7", "pair_id": "P1", "category": "Fraud"}, {"index": "8", "pair_id": "P1", "category": "Fraud"}]
    d.respond([Item("first twin", [images[0]], rows[0])])
    second = d.respond([Item("second twin", [images[1]], rows[1])])
    assert second[0].record["retrieved"] == []  # the twin guard read the pair id that came with the item
    d.close()
    trace = [
        json.loads(x)
        for x in (tmp_path / "lib" / d.name / f"{d.name}_api_echosafe_trace.jsonl").read_text().splitlines()
    ]
    assert [t["row_index"] for t in trace] == ["7", "8"] and trace[0]["row_metadata"] == "given"
    with pytest.raises(TypeError, match="no settings"):
        load_defense("Base_TinyQwen2VL", work_dir=tmp_path / "lib", k=2)


def test_random_memory_resumed_equals_uninterrupted(tiny_cache: Path, tmp_path: Path, monkeypatch) -> None:
    """RandomMemory draws per item from (seed, stream, row): a run stopped after 3 items and resumed with the
    runner saying which rows are done stores and retrieves exactly what one uninterrupted run does."""
    monkeypatch.setenv("VLMEVAL_ECHOSAFE_CACHE", str(tiny_cache))
    images = _images(tmp_path, 6)
    items = [Item(f"question number {i}", [images[i]], {"index": str(i), "pair_id": f"P{i}"}) for i in range(6)]
    name = "EchoSafe-RandomMemory_TinyQwen2VL"

    def retrieved(folder: Path) -> list:
        lines = (folder / name / f"{name}_api_echosafe_trace.jsonl").read_text().splitlines()
        return [[h["id"] for h in json.loads(x)["retrieved"]] for x in lines]

    whole = load_defense(name, work_dir=tmp_path / "whole", store="exchange", k=2)
    for item in items:
        whole.respond([item])
    whole.close()
    first = load_defense(name, work_dir=tmp_path / "split", store="exchange", k=2)
    for item in items[:3]:
        first.respond([item])
    first.close()
    resumed = load_defense(name, work_dir=tmp_path / "split", store="exchange", k=2)
    resumed.begin(DatasetRun("api", "given", done=frozenset({"0", "1", "2"})))
    for item in items[3:]:
        resumed.respond([item])
    resumed.close()
    assert retrieved(tmp_path / "whole") == retrieved(tmp_path / "split")
    assert any(retrieved(tmp_path / "whole"))  # the comparison has draws to compare
    banks = [MemoryBank.load(tmp_path / f / name / "echosafe_bank" / "api").entries() for f in ("whole", "split")]
    assert [list(e) for e in banks[0]] == [list(e) for e in banks[1]]


def _run(tmp: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "run.py"), "--work-dir", str(tmp / "out"), "--data", "MMSafetyBenchPP_DemoMini"]
    return subprocess.run([*cmd, *args], cwd=tmp, env=run_env(tmp, cache), capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_resume_with_another_batch_size_stops_before_any_model_loads(tiny_cache: Path, tmp_path: Path) -> None:
    first = _run(tmp_path, tiny_cache, "--model", "EchoSafe_TinyQwen2VL", "--judge", "rule", "--batch-size", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = json.loads(next((tmp_path / "out" / "EchoSafe_TinyQwen2VL").glob("*_run_identity.json")).read_text())
    assert saved["batch_size"] == 1 and saved["versions"]["validator"]
    again = _run(tmp_path, tiny_cache, "--model", "EchoSafe_TinyQwen2VL", "--judge", "rule", "--batch-size", "4")
    assert again.returncode == 2
    assert "batch_size: 1 -> 4" in again.stderr and "Loading weights" not in again.stderr + again.stdout
