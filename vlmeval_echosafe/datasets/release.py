"""Loader for a local copy (or, when reachable, the hub copy) of the Hugging Face release.

The release's field names could not be verified when this was written, so every name comes from
``task_configs/mmsafetybenchpp.yaml`` (key ``release``); a mismatch stops with the columns found and the key to set.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .schema import CATEGORIES
from .validate import IMAGE_REF_MAX, DatasetError

CFG = "task_configs/mmsafetybenchpp.yaml"


def resolve_root(cfg: dict[str, Any]) -> Path:
    """The release folder: env var, then the config's ``root``, then the hub (cache or download)."""
    env_name = cfg.get("root_env", "MMSAFETYBENCHPP_ROOT")
    given = os.environ.get(env_name) or cfg.get("root")
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            raise DatasetError(
                f"MM-SafetyBench++ data folder {root} (from {env_name} / {CFG} release.root) does not exist"
            )
        return root
    repo = cfg["hf_repo"]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo, repo_type="dataset"))
    except Exception as err:
        raise DatasetError(
            f"MM-SafetyBench++ data not found: no local copy was given and the Hugging Face dataset {repo} could not "
            f"be fetched ({type(err).__name__}). On a machine with hub access run `huggingface-cli download {repo} "
            f"--repo-type dataset --local-dir /path/to/mmsbpp`, then `export {env_name}=/path/to/mmsbpp` (or set "
            f"release.root in {CFG}). For an offline smoke test use --data MMSafetyBenchPP_Demo."
        ) from err


def _rows_file(root: Path, cfg: dict[str, Any]) -> Path:
    for pattern in cfg["rows_files"]:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    raise DatasetError(
        f"{root}: none of the row files {cfg['rows_files']} exists (found: {sorted(p.name for p in root.iterdir())}); "
        f"set release.rows_files in {CFG}"
    )


def _read_rows(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False)
    except Exception as err:
        raise DatasetError(
            f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'JSON lines'} ({err})"
        ) from err


def _column(rows: pd.DataFrame, cfg: dict[str, Any], field: str, path: Path | str) -> str | None:
    name = cfg["columns"].get(field)
    if name is not None and name not in rows.columns:
        raise DatasetError(
            f"{path}: column {name!r} (for {field}) not found; columns found: {list(rows.columns)}. "
            f"Set release.columns.{field} in {CFG}"
        )
    return name


class _QuestionFiles:
    """Per-category MM-SafetyBench question JSON files, read once each."""

    def __init__(self, root: Path, cfg: dict[str, Any]) -> None:
        self.root, self.cfg, self._cache = root, cfg, {}

    def entry(self, label: str, category: str, qid: str, where: str) -> dict[str, Any]:
        num = CATEGORIES[category][0]
        rel = self.cfg["question_files"][label].format(num=num, category=category)
        if rel not in self._cache:
            path = self.root / rel
            if not path.is_file():
                raise DatasetError(
                    f"{where}: question file {path} does not exist; set release.question_files.{label} in {CFG}"
                )
            try:
                self._cache[rel] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}: not valid JSON ({err})") from err
        entries = self._cache[rel]
        if qid not in entries:
            raise DatasetError(f"{where}: question id {qid!r} not in {self.root / rel}")
        return entries[qid]


def _image_value(value: Any, root: Path, where: str) -> tuple[str, str]:
    """('image', base64) for embedded images, ('image_path', absolute path) for files in the release."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return "image", base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str) and value.strip():
        if len(value) > IMAGE_REF_MAX and not (root / value).suffix:
            return "image", value
        return "image_path", str((root / value).resolve())
    raise DatasetError(f"{where}: column 'image' is missing")


def locate_release(cfg: dict[str, Any]) -> tuple[Path, Path]:
    """(release folder, row file), or a DatasetError that says how to get the data."""
    root = resolve_root(cfg)
    return root, _rows_file(root, cfg)


def load_release(cfg: dict[str, Any], modes: list[str]) -> tuple[pd.DataFrame, str]:
    """Rows of the release in the plugin's schema, restricted to ``modes``; returns (frame, source name)."""
    root, path = locate_release(cfg)
    return rows_to_frame(_read_rows(path), root, cfg, modes, path), str(path)


def rows_to_frame(
    rows: pd.DataFrame, root: Path, cfg: dict[str, Any], modes: list[str], path: Path | str
) -> pd.DataFrame:
    """Release rows (as read from the row file, or as another harness loaded them) in the plugin's schema;
    question files and image paths are read relative to ``root``; ``path`` names the rows in errors."""
    cols = {
        f: _column(rows, cfg, f, path)
        for f in ("category", "mode", "label", "image", "question", "question_id", "pair_id")
    }
    for field in ("category", "mode", "label", "image"):
        if cols[field] is None:
            raise DatasetError(
                f"{CFG}: release.columns.{field} must name a column (columns found: {list(rows.columns)})"
            )
    if cols["question"] is None and cols["question_id"] is None:
        raise DatasetError(f"{CFG}: set release.columns.question or release.columns.question_id")
    aliases = cfg.get("category_aliases") or {}
    questions = _QuestionFiles(root, cfg)
    out, kinds = [], set()
    for i, row in rows.iterrows():
        where = f"{path}: row {i}"
        mode = str(row[cols["mode"]])
        if mode not in modes:
            continue
        category = aliases.get(str(row[cols["category"]]), str(row[cols["category"]]))
        label = str(row[cols["label"]]).lower()
        qid = None if cols["question_id"] is None else str(row[cols["question_id"]])
        if category not in CATEGORIES:
            raise DatasetError(
                f"{where}: category {category!r} unknown (expected {list(CATEGORIES)}; "
                "map it in release.category_aliases)"
            )
        if cols["question"] is not None:
            question, key_phrase = row[cols["question"]], ""
        else:
            entry = questions.entry(label, category, qid, where)
            field = cfg["question_field"].get(mode)
            if field not in entry:
                raise DatasetError(
                    f"{where}: question entry has no field {field!r} (fields: {list(entry)}); "
                    f"set release.question_field.{mode} in {CFG}"
                )
            question, key_phrase = entry[field], str(entry.get(cfg.get("key_phrase_field", ""), ""))
        pair_id = str(row[cols["pair_id"]]) if cols["pair_id"] else f"{category}-{qid}"
        kind, image = _image_value(row[cols["image"]], root, where)
        kinds.add(kind)
        out.append(
            {
                "index": len(out),
                "pair_id": pair_id,
                "category": category,
                "mode": mode,
                "label": label,
                "question": question,
                "key_phrase": key_phrase,
                kind: image,
            }
        )
    if not out:
        raise DatasetError(
            f"{path}: no rows for modes {modes} (values found in column {cols['mode']!r}: "
            f"{sorted(map(str, rows[cols['mode']].unique()))})"
        )
    if len(kinds) > 1:
        raise DatasetError(f"{path}: column {cols['image']!r} mixes embedded images and file paths")
    return pd.DataFrame(out)
