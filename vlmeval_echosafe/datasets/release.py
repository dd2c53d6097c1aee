"""Loader for a local copy (or, when reachable, the hub copy) of the Hugging Face release.

The release's layout could not be verified, so the names come from ``task_configs/mmsafetybenchpp.yaml`` (key
``release``) and what can be told from the files is detected and reported (:class:`source.DataSource`):

- linking: a row finds its question-file entry by an id column, or by position (the idx-th row of each
  (category, mode, label) is key ``str(idx)``), chosen from the columns the rows have (``release.linking: auto``);
- category spellings with or without the ``NN-`` prefix, compared case-insensitively;
- question fields per mode from a named style (``release.question_style``; ``changed`` by default, ``rephrased``
  for MM-SafetyBench's rephrased questions).

A mismatch stops with the file, the row and the key to set; every bad row of a file is listed, not only the first.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..paths import config_file
from .hints import download_hint
from .linking import CFG, column, linking
from .schema import CATEGORIES, LABELS, MODES
from .source import DataSource, find_manifest
from .validate import IMAGE_REF_MAX, DatasetError

_PREFIX = re.compile(r"^\s*(\d+)[-_ ]+")
_MAX_LISTED = 20  # bad rows named in one error; the rest are counted


def resolve_root(cfg: dict[str, Any]) -> Path:
    """The release folder: env var, then the config's ``root``, then the hub (cache or download)."""
    env_name = cfg.get("root_env", "MMSAFETYBENCHPP_ROOT")
    given = os.environ.get(env_name) or cfg.get("root")
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            where = f"MM-SafetyBench++ data folder {root} (from {env_name} / {CFG} release.root)"
            raise DatasetError(f"{where} does not exist; {download_hint(cfg['hf_repo'], root)}")
        return root
    repo = cfg["hf_repo"]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo, repo_type="dataset"))
    except Exception as err:
        raise DatasetError(
            f"MM-SafetyBench++ data not found: no local copy was given and the Hugging Face dataset {repo} could not "
            f"be fetched ({type(err).__name__}). On a machine with hub access run `hf download {repo} "
            f"--repo-type dataset --local-dir /path/to/mmsbpp`, then `export {env_name}=/path/to/mmsbpp` (or set "
            f"release.root in {CFG}). For an offline smoke test use --data MMSafetyBenchPP_Demo."
        ) from err


def find_row_files(root: Path, cfg: dict[str, Any]) -> list[Path]:
    """Every file of the first ``release.rows_files`` pattern that matches (a sharded parquet split is read
    whole), in name order."""
    for pattern in cfg["rows_files"]:
        found = sorted(p for p in root.glob(pattern) if p.is_file())
        if found:
            return found
    raise DatasetError(
        f"{root}: none of the row files {cfg['rows_files']} exists (found: {sorted(p.name for p in root.iterdir())}); "
        f"{download_hint(cfg['hf_repo'], root)}; for another layout set release.rows_files in {CFG}"
    )


@dataclass
class Rows:
    """Release rows as read, with where each came from (for messages)."""

    frame: pd.DataFrame
    where: list[str]
    files: list[str] = field(default_factory=list)

    @classmethod
    def loaded(cls, frame: pd.DataFrame, name: str) -> Rows:
        """Rows another harness loaded (lmms-eval's hub dataset), named ``name`` in messages."""
        frame = frame.reset_index(drop=True)
        return cls(frame, [f"{name}: row {i}" for i in range(len(frame))], [name])


def read_rows(paths: list[Path]) -> Rows:
    frames, where = [], []
    for path in paths:
        try:
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
                where += [f"{path}: row {i}" for i in range(len(frame))]
            else:
                frame = pd.read_json(path, lines=True, dtype=False)
                where += [f"{path}: line {i + 1}" for i in range(len(frame))]
        except Exception as err:
            raise DatasetError(
                f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'JSON lines'} ({err})"
            ) from err
        frames.append(frame)
    columns = [list(f.columns) for f in frames]
    if any(c != columns[0] for c in columns):
        raise DatasetError(f"row files {[str(p) for p in paths]} have different columns: {columns}")
    return Rows(pd.concat(frames, ignore_index=True), where, [str(p) for p in paths])


def question_fields(cfg: dict[str, Any], style: str | None) -> tuple[str, dict[str, str]]:
    """(style name, mode -> question-file field) for ``style`` (default ``release.question_style``)."""
    styles = cfg.get("question_styles") or {}
    style = style or cfg.get("question_style")
    if style not in styles:
        raise DatasetError(f"{CFG}: question style {style!r} is not in release.question_styles ({list(styles)})")
    fields = styles[style] or {}
    missing = [m for m in MODES if not fields.get(m)]
    if missing:
        raise DatasetError(f"{CFG}: release.question_styles.{style} names no field for modes {missing}")
    return style, {m: str(fields[m]) for m in MODES}


class _Canon:
    """Spellings in the rows -> the plugin's category and mode keys (case-insensitive, ``NN-`` prefix allowed)."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.categories = {k.lower(): k for k in CATEGORIES}
        self.categories.update({str(a).lower(): k for a, k in aliases.items()})
        self.modes = {m.lower(): m for m in MODES}
        self.labels = {lab.lower(): lab for lab in LABELS}

    def category(self, raw: Any) -> tuple[str | None, str | None]:
        """(plugin key, None) or (None, why not)."""
        text = str(raw).strip()
        prefix = _PREFIX.match(text)
        key = self.categories.get(text[prefix.end() :].lower() if prefix else text.lower())
        if key is None:
            return None, f"category {raw!r} unknown (expected {list(CATEGORIES)}; map it in release.category_aliases)"
        if prefix and int(prefix.group(1)) != CATEGORIES[key][0]:
            return None, f"category {raw!r}: prefix {prefix.group(1)} is not {key}'s number {CATEGORIES[key][0]:02d}"
        return key, None

    def mode(self, raw: Any) -> str | None:
        return self.modes.get(str(raw).strip().lower())

    def label(self, raw: Any) -> str | None:
        return self.labels.get(str(raw).strip().lower())


class QuestionFiles:
    """Per-category MM-SafetyBench question JSON files, found by their ``NN-`` number and read once each."""

    def __init__(self, root: Path, cfg: dict[str, Any]) -> None:
        self.root, self.cfg = root, cfg
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        self.used: dict[str, str] = {}

    def entries(self, label: str, category: str) -> dict[str, Any]:
        if (label, category) not in self._entries:
            pattern = self.cfg["question_files"][label].format(num=CATEGORIES[category][0], category=category)
            found = sorted(p for p in self.root.glob(pattern) if p.is_file())
            if len(found) != 1:
                raise DatasetError(
                    f"{self.root}: {len(found)} question files match {pattern!r} for {label} {category} "
                    f"({[str(p) for p in found]}); expected one. Set release.question_files.{label} in {CFG}"
                )
            try:
                data = json.loads(found[0].read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{found[0]}: not valid JSON ({err})") from err
            if not isinstance(data, dict):
                raise DatasetError(f"{found[0]}: expected an object of id -> entry, got {type(data).__name__}")
            self._entries[(label, category)] = data
            self.used[f"{label}/{category}"] = str(found[0])
        return self._entries[(label, category)]


def _image_value(value: Any, root: Path) -> tuple[str, str] | None:
    """('image', base64) for embedded images, ('image_path', absolute path) for files; None when empty."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return "image", base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str) and value.strip():
        if len(value) > IMAGE_REF_MAX and not (root / value).suffix:
            return "image", value
        return "image_path", str((root / value).resolve())
    return None


@dataclass
class Mapped:
    """Release rows in the plugin's schema, what was detected, and every row that could not be mapped."""

    frame: pd.DataFrame
    source: DataSource
    problems: list[str]


def map_rows(rows: Rows, root: Path, cfg: dict[str, Any], modes: list[str], style: str | None = None) -> Mapped:
    """Map release rows onto the plugin's schema, collecting per-row problems instead of stopping at the first.
    Rows of modes outside ``modes`` are dropped after checking (positions count every row of the file)."""
    source = ", ".join(rows.files) or "rows"
    frame = rows.frame
    cols = {f: column(frame, cfg, f, source) for f in ("category", "mode", "label", "image", "pair_id")}
    for name in ("category", "mode", "label", "image"):
        if cols[name] is None:
            raise DatasetError(
                f"{CFG}: release.columns.{name} must name a column (columns found: {list(frame.columns)})"
            )
    link = linking(frame, cfg, source)
    style_name, fields = question_fields(cfg, style)
    canon = _Canon(cfg.get("category_aliases") or {})
    questions = QuestionFiles(root, cfg)
    problems: list[str] = []
    spellings: dict[str, str] = {}
    keys: list[tuple[str, str, str] | None] = []
    column_at = {c: j for j, c in enumerate(frame.columns)}
    for i, values in enumerate(frame.itertuples(index=False, name=None)):
        raw = {name: values[column_at[cols[name]]] for name in ("category", "mode", "label")}
        category, why = canon.category(raw["category"])
        mode, label = canon.mode(raw["mode"]), canon.label(raw["label"])
        if why:
            problems.append(f"{rows.where[i]}: {why}")
        if mode is None:
            problems.append(f"{rows.where[i]}: mode {raw['mode']!r} unknown (expected {list(MODES)})")
        if label is None:
            problems.append(f"{rows.where[i]}: label {raw['label']!r} unknown (expected {list(LABELS)})")
        if category:
            spellings.setdefault(str(raw["category"]), category)
        keys.append((category, mode, label) if category and mode and label else None)
    # Position linking: the idx-th row of each (category, mode, label) in file order is question id str(idx).
    group = [str(k) for k in keys]
    positions = pd.Series(group).groupby(group).cumcount()
    out, kinds = [], set()
    failed_files: set[tuple[str, str]] = set()  # question files that cannot be used: reported once, not per row
    for i, values in enumerate(frame.itertuples(index=False, name=None)):
        if keys[i] is None:
            continue
        category, mode, label = keys[i]
        where = rows.where[i]
        qid = str(values[column_at[link.id_column]]) if link.id_column else str(positions.iloc[i])
        if link.question_column:
            question, key_phrase = values[column_at[link.question_column]], ""
        else:
            if (label, category) in failed_files:
                continue
            try:
                entries = questions.entries(label, category)
            except DatasetError as err:
                failed_files.add((label, category))
                problems.append(f"{err} (its {label} {category} rows are not mapped)")
                continue
            entry = entries.get(qid)
            if not isinstance(entry, dict):
                file = questions.used.get(f"{label}/{category}")
                how = "id column" if link.id_column else f"it is {label} {category} {mode} row number {qid}"
                problems.append(f"{where}: question id {qid!r} ({how}) is not in {file} (ids {_id_range(entries)})")
                continue
            field_name = fields[mode]
            if field_name not in entry:
                problems.append(
                    f"{where}: question entry {qid!r} of {questions.used[f'{label}/{category}']} has no field "
                    f"{field_name!r} (fields: {list(entry)}); set release.question_styles.{style_name}.{mode} "
                    f"in {CFG}"
                )
                continue
            question, key_phrase = entry[field_name], str(entry.get(cfg.get("key_phrase_field") or "", ""))
        image = _image_value(values[column_at[cols["image"]]], root)
        if image is None:
            problems.append(f"{where}: column {cols['image']!r} is empty")
            continue
        kinds.add(image[0])
        if mode not in modes:
            continue
        pair_id = str(values[column_at[cols["pair_id"]]]) if cols["pair_id"] else f"{category}-{qid}"
        out.append(
            {
                "index": len(out),
                "pair_id": pair_id,
                "category": category,
                "mode": mode,
                "label": label,
                "question": question,
                "key_phrase": key_phrase,
                image[0]: image[1],
                "source_row": where,
            }
        )
    if len(kinds) > 1:
        problems.append(f"{source}: column {cols['image']!r} mixes embedded images and file paths")
    mapped = pd.DataFrame(out)
    detected = DataSource(
        kind="release",
        rows=len(mapped),
        row_files=rows.files,
        root=str(root),
        config=str(config_file(CFG)),
        linking=link.how,
        linking_reason=link.reason,
        question_style=None if link.question_column else style_name,
        question_fields={} if link.question_column else fields,
        question_files=dict(sorted(questions.used.items())),
        category_spellings=dict(sorted(spellings.items())),
        images={"image": "embedded", "image_path": "files"}.get(next(iter(kinds), ""), "none"),
    )
    return Mapped(mapped, detected, problems)


def _id_range(entries: dict[str, Any]) -> str:
    numeric = sorted(int(k) for k in entries if str(k).isdigit())
    if numeric and numeric == list(range(numeric[0], numeric[-1] + 1)) and len(numeric) == len(entries):
        return f"{numeric[0]}..{numeric[-1]}"
    return f"{len(entries)} keys, e.g. {list(entries)[:5]}"


def raise_problems(problems: list[str], source: str) -> None:
    """One DatasetError listing the bad rows (the first ``_MAX_LISTED``, then a count)."""
    if not problems:
        return
    shown = problems[:_MAX_LISTED]
    more = f"\n  … and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise DatasetError(f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)


def locate_release(cfg: dict[str, Any]) -> tuple[Path, list[Path]]:
    """(release folder, row files), or a DatasetError that says how to get the data."""
    root = resolve_root(cfg)
    return root, find_row_files(root, cfg)


def load_release(cfg: dict[str, Any], modes: list[str], style: str | None = None) -> tuple[pd.DataFrame, DataSource]:
    """Rows of the release in the plugin's schema, restricted to ``modes``, and what the load detected."""
    root, paths = locate_release(cfg)
    return rows_to_frame(read_rows(paths), root, cfg, modes, style)


def rows_to_frame(
    rows: Rows, root: Path, cfg: dict[str, Any], modes: list[str], style: str | None = None
) -> tuple[pd.DataFrame, DataSource]:
    """Release rows (as read from the row files, or as another harness loaded them) in the plugin's schema;
    question files and image paths are read relative to ``root``. Any unmappable row stops the load."""
    mapped = map_rows(rows, root, cfg, modes, style)
    raise_problems(mapped.problems, ", ".join(rows.files) or "release rows")
    if mapped.frame.empty:
        values = sorted(map(str, rows.frame[cfg["columns"]["mode"]].unique()))
        raise DatasetError(
            f"{', '.join(rows.files)}: no rows for modes {modes} (values found in column "
            f"{cfg['columns']['mode']!r}: {values})"
        )
    # The folder's data-check manifest, recorded with the load (read here, not by the check that writes it).
    return mapped.frame.drop(columns="source_row"), replace(mapped.source, manifest=find_manifest(root))
