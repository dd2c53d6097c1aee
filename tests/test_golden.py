"""Every registered row writes, on the 12-item demo and through both harnesses, exactly what it wrote before the
core redesign: predictions, bank entries in order, and trace lines (``tests/golden.py`` records them).

A change that is meant to change outputs (a new prompt version, say) re-records the file with
``PYTHONPATH=. python tests/golden.py tests/data/golden_demomini.json`` and says why in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden import record
from runs import NEEDS_LMMS_EVAL

pytestmark = [pytest.mark.slow, NEEDS_LMMS_EVAL]

GOLDEN = Path(__file__).parent / "data" / "golden_demomini.json"


def _first_difference(saved: object, fresh: object, where: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(fresh, dict):
        for key in sorted(set(saved) | set(fresh), key=str):
            diff = _first_difference(saved.get(key), fresh.get(key), f"{where}/{key}")
            if diff:
                return diff
        return None
    if isinstance(saved, list) and isinstance(fresh, list) and len(saved) == len(fresh):
        for i, (a, b) in enumerate(zip(saved, fresh, strict=True)):
            diff = _first_difference(a, b, f"{where}[{i}]")
            if diff:
                return diff
        return None
    return None if saved == fresh else f"{where}: recorded {str(saved)[:300]!r}, now {str(fresh)[:300]!r}"


def test_every_row_in_both_harnesses_writes_what_it_wrote_before(tmp_path: Path) -> None:
    saved = json.loads(GOLDEN.read_text())
    fresh = json.loads(json.dumps(record(tmp_path)))  # the same JSON round trip as the recording
    assert sorted(fresh) == sorted(saved)
    assert all(saved[k].get("predictions") for k in saved)  # the comparison has something to compare
    diff = _first_difference(saved, fresh)
    assert diff is None, diff


def test_the_comparison_finds_a_changed_insight() -> None:
    saved = json.loads(GOLDEN.read_text())
    changed = json.loads(GOLDEN.read_text())
    changed["vlmeval/EchoSafe@B1"]["bank"][3][0]["decision"] = "flipped"
    assert _first_difference(saved, saved) is None
    assert "vlmeval/EchoSafe@B1/bank[3][0]" in (_first_difference(saved, changed) or "")
