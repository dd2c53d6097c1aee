"""What a load of MM-SafetyBench++ used and detected, printed at load and written next to the results.

The release's layout is not verified (how rows link to question entries, which question field a mode asks, how
categories are spelled), so the loader detects it. A detection that differs from what a reader assumes must be
visible: the record names the row files, the linking and why it was chosen, the question fields, the category
spellings met and the ``data check`` manifest of the folder when there is one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .validate import DatasetError

# Written by `vlmeval-echosafe data check DIR` into DIR; a later load records its hash.
MANIFEST_NAME = "echosafe_data_manifest.json"
SKIPPED_DIRS = (".cache", ".git")  # hub download metadata and git internals change without the data changing
# Fields that decide which items and texts are measured: a resumed run whose record differs in one of them would
# mix two benchmarks in one prediction file.
_IDENTITY = ("kind", "linking", "question_style", "question_fields", "rows", "images")


@dataclass(frozen=True)
class DataSource:
    """Where the rows of one load came from and how they were read."""

    kind: str  # "release" or "demo"
    rows: int  # rows kept after the mode selection
    row_files: list[str] = field(default_factory=list)
    root: str | None = None
    config: str | None = None  # the YAML the release mapping was read from
    linking: str | None = None  # "id" | "position" | "question column"
    linking_reason: str | None = None
    question_style: str | None = None
    question_fields: dict[str, str] = field(default_factory=dict)  # mode -> field of the question-file entry
    question_files: dict[str, str] = field(default_factory=dict)  # "<label>/<category>" -> file
    category_spellings: dict[str, str] = field(default_factory=dict)  # spelling in the rows -> plugin key
    images: str | None = None  # "files" | "embedded"
    manifest: dict[str, Any] | None = None  # {"path", "sha256", "passed"} of the folder's data-check manifest
    checksum: str | None = None  # sha256 of the shipped file (demo)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for the console: what a person should glance at before trusting the numbers."""
        if self.kind == "demo":
            return f"MM-SafetyBench++ data: shipped demo split ({self.rows} rows, sha256 {self.checksum})"
        fields = ", ".join(f"{m}: {f!r}" for m, f in self.question_fields.items()) or "from the row file"
        spellings = ", ".join(f"{k!r}->{v}" for k, v in self.category_spellings.items() if k != v) or "as the plugin's"
        manifest = (
            f"{self.manifest['path']} (sha256 {self.manifest['sha256'][:12]}…, data check "
            f"{'passed' if self.manifest.get('passed') else 'FAILED'}"
            f"{'' if self.manifest.get('files_match') else '; the folder CHANGED since: run data check again'})"
            if self.manifest
            else f"none (run `vlmeval-echosafe data check {self.root}` before a real run)"
        )
        return "\n".join(
            [
                f"MM-SafetyBench++ data: {self.rows} rows from {', '.join(self.row_files)} ({self.images} images)",
                f"  linking: {self.linking} ({self.linking_reason})",
                f"  questions: style {self.question_style!r}, fields {fields}",
                f"  category spellings: {spellings}",
                f"  manifest: {manifest}",
                f"  mapping: {self.config}",
            ]
        )

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is measured (plus the manifest hash when one was recorded)."""
        out = {k: getattr(self, k) for k in _IDENTITY}
        out["manifest_sha256"] = (self.manifest or {}).get("sha256")
        return out


def announce(source: DataSource) -> None:
    """Print the summary to stderr (stdout belongs to the host's tables)."""
    print(source.summary(), file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(root: Path) -> list[Path]:
    """The files a manifest covers: everything under ``root`` but the manifest itself and ``SKIPPED_DIRS``."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name != MANIFEST_NAME
        and not any(part in SKIPPED_DIRS for part in p.relative_to(root).parts)
    )


def find_manifest(root: Path) -> dict[str, Any] | None:
    """The data-check manifest of ``root`` as {path, sha256, passed, written, files_match}, or None when there is
    none. ``files_match`` compares names and sizes only (hashing every image on each load would take minutes): a
    False says the folder changed since the check."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        listed = {name: int(entry["bytes"]) for name, entry in content["files"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"{path}: not a data-check manifest ({type(err).__name__}: {err}); run "
            f"`vlmeval-echosafe data check {root}` again"
        ) from err
    present = {p.relative_to(root).as_posix(): p.stat().st_size for p in data_files(root)}
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "passed": content.get("passed"),
        "written": content.get("written"),
        "files_match": present == listed,
    }


def record_path(predictions: str | Path) -> Path:
    """``<model>_<dataset>_data_source.json`` beside the host's prediction file ``<model>_<dataset>.<ext>``."""
    predictions = Path(predictions)
    return predictions.with_name(f"{predictions.stem}_data_source.json")


def read_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err}); delete it to record the data source again") from err


def record_inference(source: DataSource, path: Path, resuming: bool) -> None:
    """Write the record before inference starts. When earlier predictions for the same file exist (``resuming``),
    refuse if they came from data read differently: the resumed file would mix two item sets or question styles."""
    old = read_record(path) if resuming else None
    if old is not None:
        saved = old.get("source") or {}
        before = {k: saved.get(k) for k in _IDENTITY}
        before["manifest_sha256"] = (saved.get("manifest") or {}).get("sha256")
        now = source.identity()
        if before["manifest_sha256"] is None or now["manifest_sha256"] is None:
            before.pop("manifest_sha256")
            now.pop("manifest_sha256")
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            diff = "; ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
            raise DatasetError(
                f"{path}: the predictions beside it were made from data read differently ({diff}). Move the "
                "predictions away to start over, or restore the data and its settings to resume."
            )
    _write(path, source, "inference")


def record_evaluation(source: DataSource | None, predictions: str | Path) -> dict[str, Any] | None:
    """The record to report with the scores: the one inference wrote beside ``predictions``, else this load's
    ``source`` (written now, marked as recorded at evaluation), else None."""
    path = record_path(predictions)
    old = read_record(path)
    if old is not None or source is None:
        return old
    return _write(path, source, "evaluation (no record from inference)")


def _write(path: Path, source: DataSource, stage: str) -> dict[str, Any]:
    record = {"recorded_at": stage, "source": source.to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record
