"""Judge every prediction once, keep one JSON line per judgement, and reuse them on the next run.

A record is reused only when its key (judge name, prompt version, question, response, label) matches, and never
when it was ``unknown``: re-running re-asks exactly the items the judge failed on. Lines are appended and
flushed one by one, so a crash loses at most the judgement in flight.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from .base import UNKNOWN, Judge, JudgeItem, Judgement


def item_from_row(row: Any, response: Any) -> JudgeItem:
    """The judge's view of one benchmark row and the model's response; a missing response (NaN / None) becomes ""
    so every harness counts it as the same ``unknown``."""
    missing = response is None or (not isinstance(response, str) and bool(pd.isna(response)))
    text = "" if missing else str(response)
    return JudgeItem(str(row["index"]), str(row["question"]), text, row["label"])


def record_key(judge: Judge, item: JudgeItem) -> str:
    payload = json.dumps([judge.name, judge.version, item.question, item.response, item.label])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _load(path: Path) -> dict[str, dict]:
    """Earlier judgements by key; a torn last line (crash mid-write) is ignored, later lines win."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                out[rec["key"]] = rec
    return out


def judge_all(judge: Judge, items: Sequence[JudgeItem], path: Path, nproc: int = 4) -> list[Judgement]:
    """Judgements for ``items`` in order, asking the judge only for what ``path`` does not already hold."""
    cached = _load(path)
    keys = [record_key(judge, it) for it in items]
    results: list[Judgement | None] = [None] * len(items)
    todo = []
    for i, key in enumerate(keys):
        rec = cached.get(key)
        if rec is not None and rec["decision"] != UNKNOWN:
            results[i] = Judgement(rec["decision"], rec["score"], rec.get("raw", ""), rec.get("error"))
        else:
            todo.append(i)
    lock = threading.Lock()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc=f"Judge ({judge.name})") as bar:

        def run(i: int) -> None:
            verdict = judge.judge(items[i])
            rec = {
                "key": keys[i],
                "index": items[i].index,
                "label": items[i].label,
                "judge": judge.name,
                "judge_version": judge.version,
                "decision": verdict.decision,
                "score": verdict.score,
                "raw": verdict.raw,
                "error": verdict.error,
            }
            with lock:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                fh.flush()
                results[i] = verdict
                bar.update(1)

        workers = max(1, min(nproc, len(todo))) if judge.refusal_only is False else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run, todo))
    return [r for r in results if r is not None]
