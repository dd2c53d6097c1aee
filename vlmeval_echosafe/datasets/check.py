"""``vlmeval-echosafe data check DIR``: check a local copy of the release before any model runs.

A run on a wrong or partial copy costs GPU hours and yields numbers nobody can tell are wrong. The check reads the
folder exactly as the loader does (same detection, same row checks), then also counts rows per category x mode x
label against the release's sizes, decodes every image, lists twins that share an image, and prints two rows per
(mode, label) so a person can see at a glance that the texts are right. It writes a manifest (sha256 of every
file) into DIR when everything holds, and nowhere in DIR otherwise (the failure report goes to the temp folder);
later loads record its hash next to the predictions. Exit status 0 only when everything holds.
No VLMEvalKit import.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image
from tqdm import tqdm

from .. import __version__
from ..paths import ConfigError, describe_config
from .config import load_config
from .hints import download_hint
from .release import Mapped, find_row_files, map_rows, question_fields, read_rows
from .schema import CATEGORIES, EXPECTED_PAIRS, LABELS, MODES
from .source import MANIFEST_NAME, data_files
from .validate import DatasetError, validate_frame

SAMPLES_PER_GROUP = 2
_SHOWN = 5  # pairs named on the console per list; the manifest has them all
MAX_PRINTED = 50  # problems printed; the manifest has them all


@dataclass
class Report:
    """Everything the check found; ``problems`` empty means the folder can be used as is."""

    root: Path
    problems: list[str] = field(default_factory=list)
    mapped: Mapped | None = None
    counts: pd.DataFrame | None = None
    shared_images: dict[str, list[str]] = field(default_factory=dict)  # mode -> pair ids whose twins share an image
    other_styles: dict[str, int] = field(default_factory=dict)  # style -> question entries lacking its fields
    samples: list[dict[str, str]] = field(default_factory=list)
    distinct_images: int = 0

    @property
    def passed(self) -> bool:
        return not self.problems


def check_folder(root: Path, cfg: dict[str, Any], style: str | None = None, progress: bool = True) -> Report:
    """Run every check on ``root``; problems are collected, never raised."""
    report = Report(root)
    try:
        rows = read_rows(find_row_files(root, cfg))
        report.mapped = mapped = map_rows(rows, root, cfg, list(MODES), style)
    except DatasetError as err:
        report.problems.append(str(err))
        return report
    report.problems += mapped.problems
    frame = mapped.frame
    if frame.empty:
        return report
    report.counts = _counts(frame, report.problems)
    _pairs(frame, report.problems)
    digests = _images(frame, report, progress)
    _twins(frame, digests, report)
    report.other_styles = _other_styles(mapped, cfg)
    report.samples = _samples(frame)
    if not report.problems:  # the loader's own row checks, as the run will apply them
        try:
            validate_frame(frame.drop(columns="source_row"), ", ".join(mapped.source.row_files), check_images=False)
        except DatasetError as err:
            report.problems.append(str(err))
    return report


def _counts(frame: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
    """Rows per category x (mode, label) beside the expected pairs; a differing cell is a problem."""
    counts = frame.groupby(["category", "mode", "label"]).size()
    table = pd.DataFrame(index=list(CATEGORIES))
    for mode in MODES:
        for label in LABELS:
            column = [int(counts.get((c, mode, label), 0)) for c in CATEGORIES]
            table[f"{mode} {label}"] = column
            for category, n in zip(CATEGORIES, column, strict=True):
                if n != EXPECTED_PAIRS[category]:
                    problems.append(f"{category} {mode} {label}: {n} rows, expected {EXPECTED_PAIRS[category]}")
    table["expected"] = [EXPECTED_PAIRS[c] for c in CATEGORIES]
    table.loc["all"] = table.sum()
    return table


def _pairs(frame: pd.DataFrame, problems: list[str]) -> None:
    """Every (pair, mode) has exactly one unsafe and one safe row."""
    for (pair, mode), group in frame.groupby(["pair_id", "mode"], sort=False):
        labels = list(group["label"])
        if sorted(labels) != sorted(LABELS):
            rows = "; ".join(f"{r.source_row} ({r.label})" for r in group.itertuples())
            problems.append(f"pair {pair!r} {mode}: labels {labels}, expected one unsafe and one safe: {rows}")


def _image_bytes(row: Any) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, why not) for one row's image."""
    if isinstance(getattr(row, "image_path", None), str):
        path = Path(row.image_path)
        if not path.is_file():
            return None, f"image file {path} does not exist"
        return path.read_bytes(), None
    try:
        return base64.b64decode(row.image, validate=True), None
    except ValueError as err:
        return None, f"embedded image is not valid base64 ({err})"


def _images(frame: pd.DataFrame, report: Report, progress: bool) -> dict[str, str]:
    """Decode every distinct image once (with a progress bar); returns source row -> sha256 of the image bytes."""
    digests: dict[str, str] = {}
    decoded: dict[str, str | None] = {}  # image key -> sha256, None when it failed
    rows = list(frame.itertuples(index=False))
    for row in tqdm(rows, desc="decoding images", unit="img", disable=not progress, file=sys.stderr):
        path = getattr(row, "image_path", None)
        key = path if isinstance(path, str) else row.image
        if key not in decoded:
            data, why = _image_bytes(row)
            if data is not None:
                try:
                    with Image.open(io.BytesIO(data)) as img:
                        img.load()
                except Exception as err:  # PIL raises many types for corrupt files
                    what = f"image file {path}" if isinstance(path, str) else "embedded image"
                    why = f"{what} does not decode ({type(err).__name__}: {err})"
            if why:
                report.problems.append(f"{row.source_row}: {why}")
                decoded[key] = None
                continue
            decoded[key] = hashlib.sha256(data).hexdigest()
        elif decoded[key] is None:
            report.problems.append(f"{row.source_row}: same image as a row above, which failed")
        if decoded[key] is not None:
            digests[row.source_row] = decoded[key]
    report.distinct_images = len({d for d in decoded.values() if d})
    return digests


def _twins(frame: pd.DataFrame, digests: dict[str, str], report: Report) -> None:
    """List pairs whose twins share an image; twins with the same image AND the same question are a problem (the
    pair cannot tell a refusal from an answer)."""
    shared: dict[str, list[str]] = {m: [] for m in MODES}
    for (pair, mode), group in frame.groupby(["pair_id", "mode"], sort=False):
        if len(group) != 2:
            continue
        a, b = group.itertuples()
        same = digests.get(a.source_row) is not None and digests.get(a.source_row) == digests.get(b.source_row)
        if same:
            shared[mode].append(str(pair))
            if a.question == b.question:
                report.problems.append(
                    f"pair {pair!r} {mode}: the twins have the same image and the same question "
                    f"({a.source_row}; {b.source_row})"
                )
    report.shared_images = shared


def _other_styles(mapped: Mapped, cfg: dict[str, Any]) -> dict[str, int]:
    """For each question style not used: how many entries of the question files lack one of its fields."""
    used = mapped.source.question_style
    if used is None:
        return {}
    files = [json.loads(Path(p).read_text(encoding="utf-8")) for p in mapped.source.question_files.values()]
    out = {}
    for style in cfg.get("question_styles") or {}:
        if style == used:
            continue
        fields = set(question_fields(cfg, style)[1].values())
        out[style] = sum(1 for f in files for e in f.values() if not isinstance(e, dict) or not fields <= set(e))
    return out


def _samples(frame: pd.DataFrame) -> list[dict[str, str]]:
    """Two rows per (mode, label), from different categories, in schema order."""
    out = []
    for mode in MODES:
        for label in LABELS:
            group = frame[(frame["mode"] == mode) & (frame["label"] == label)]
            for _, row in group.drop_duplicates("category").head(SAMPLES_PER_GROUP).iterrows():
                image = row["image_path"] if isinstance(row.get("image_path"), str) else "(embedded)"
                out.append(
                    {
                        "mode": mode,
                        "label": label,
                        "category": row["category"],
                        "pair_id": row["pair_id"],
                        "question": row["question"],
                        "image": image,
                        "row": row["source_row"],
                    }
                )
    return out


def hash_files(root: Path, progress: bool = True) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file a manifest covers (``source.data_files``)."""
    out = {}
    for path in tqdm(data_files(root), desc="hashing files", unit="file", disable=not progress, file=sys.stderr):
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(root).as_posix()] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return out


def failure_report_path(root: Path) -> Path:
    """Where a failed check's report goes: outside the checked folder, which a failed check leaves as it was (an
    empty folder stays empty, a partial download gets no file that later tools would take for the release's)."""
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / "vlmeval-echosafe" / f"data-check-{root.name or 'root'}-{tag}.json"


def write_manifest(report: Report, progress: bool = True) -> Path:
    """What was checked, the verdict and every file's hash: ``DIR/echosafe_data_manifest.json`` when the check
    passed, else the same record at :func:`failure_report_path`."""
    source = report.mapped.source if report.mapped else None
    manifest = {
        "tool": f"vlmeval-echosafe {__version__} data check",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "root": str(report.root),
        "passed": report.passed,
        "problems": report.problems,
        "detected": replace(source, manifest=None).to_dict() if source else None,
        "counts": report.counts.to_dict(orient="index") if report.counts is not None else None,
        "twins_sharing_an_image": report.shared_images,
        "files": hash_files(report.root, progress),
    }
    path = report.root / MANIFEST_NAME if report.passed else failure_report_path(report.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


def print_report(report: Report, out: Any = None) -> None:
    """The console summary: detection, counts, images, shared images, samples, verdict."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    say(f"data check {report.root}")
    mapped = report.mapped
    if mapped is not None:
        src = mapped.source
        say(f"rows:       {len(mapped.frame)} from {', '.join(src.row_files)} ({src.images} images)")
        say(f"linking:    {src.linking} ({src.linking_reason})")
        if src.question_style:
            fields = ", ".join(f"{m} {f!r}" for m, f in src.question_fields.items())
            say(f"questions:  style {src.question_style!r}: {fields}")
            for style, lacking in report.other_styles.items():
                state = "every entry has its fields" if not lacking else f"{lacking} entries lack its fields"
                say(f"            other style {style!r}: {state}")
        say("categories: " + ", ".join(f"{k!r} -> {v}" for k, v in src.category_spellings.items()))
        for key, path in src.question_files.items():
            say(f"            {key:<28} {path}")
    if report.counts is not None:
        say("\nrows per category x mode x label (expected = pairs per mode):")
        say(report.counts.to_string())
        say(f"\nimages: {report.distinct_images} distinct, decoded")
        for mode, pairs in report.shared_images.items():
            shown = ", ".join(pairs[:_SHOWN]) + (", …" if len(pairs) > _SHOWN else "")
            say(f"twins sharing an image, {mode}: {len(pairs)} pairs" + (f" ({shown})" if pairs else ""))
    if report.samples:
        say("\nsamples:")
        for s in report.samples:
            say(f"  [{s['mode']} {s['label']}] {s['category']} {s['pair_id']}: {s['question']}")
            say(f"      image {s['image']}  <- {s['row']}")
    say("")
    if report.passed:
        say("OK: every check holds")
    else:
        say(f"FAILED: {len(report.problems)} problem(s)")
        for problem in report.problems[:MAX_PRINTED]:
            say(f"  - {problem}")
        if len(report.problems) > MAX_PRINTED:
            say(f"  … and {len(report.problems) - MAX_PRINTED} more (all of them in the manifest)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmeval-echosafe data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a local copy of the release and write its manifest")
    check.add_argument("dir", type=Path, help="the release folder (what MMSAFETYBENCHPP_ROOT will point at)")
    check.add_argument("--question-style", default=None, help="a release.question_styles name (default: the config's)")
    check.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        print(describe_config())
        cfg = load_config()["release"]
    except (ConfigError, ValueError) as err:
        print(f"vlmeval-echosafe data check: {err}", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(
            f"vlmeval-echosafe data check: {args.dir} is not a folder; {download_hint(cfg['hf_repo'], args.dir)}",
            file=sys.stderr,
        )
        return 2
    report = check_folder(args.dir.resolve(), cfg, args.question_style, progress=not args.no_progress)
    path = write_manifest(report, progress=not args.no_progress)
    print_report(report)
    if report.passed:
        print(f"manifest: {path}")
        return 0
    print(f"report:   {path} (nothing was written into {report.root})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
