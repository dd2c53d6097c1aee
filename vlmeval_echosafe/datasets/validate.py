"""Row checks shared by every MM-SafetyBench++ source, so bad data stops with a message naming the row.

VLMEvalKit would otherwise fail far from the cause (an assert in its image-reference code, a PIL error at
inference time) or, worse, run on a partial benchmark.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .schema import CATEGORIES, COLUMNS, LABELS, MODES

IMAGE_REF_MAX = 64  # VLMEvalKit reads an image cell this short as another row's index


class DatasetError(ValueError):
    """Bad benchmark data; the message names the source, the row and the column."""


def _where(source: str, row: pd.Series) -> str:
    return f"{source}: row index={row['index']!r}"


def _check_image_bytes(data: bytes, where: str) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DatasetError(f"{where}: column 'image' does not decode to an image ({err})") from err


def decode_base64_image(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DatasetError(f"{where}: column 'image' is not valid base64 ({err})") from err


def validate_frame(frame: pd.DataFrame, source: str, check_images: bool = True) -> pd.DataFrame:
    """Check every row of a benchmark frame and return it with the plugin's column order."""
    image_col = "image" if "image" in frame.columns else "image_path"
    needed = [c for c in COLUMNS if c != "image"] + [image_col]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DatasetError(f"{source}: missing columns {missing}; columns found: {list(frame.columns)}")
    frame = frame.reset_index(drop=True)
    frame["index"] = frame["index"].astype(str)
    dup = frame[frame["index"].duplicated(keep=False)]
    if not dup.empty:
        first = dup.iloc[0]["index"]
        rows = list(dup.index[dup["index"] == first])
        raise DatasetError(f"{source}: duplicate index {first!r} (rows {rows})")
    images = dict(zip(frame["index"], frame[image_col], strict=True))
    for _, row in frame.iterrows():
        where = _where(source, row)
        for col, allowed in (("category", CATEGORIES), ("mode", MODES), ("label", LABELS)):
            if row[col] not in allowed:
                raise DatasetError(f"{where}: column {col!r} has {row[col]!r}, expected one of {list(allowed)}")
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise DatasetError(f"{where}: column 'question' is empty")
        if not isinstance(row["pair_id"], str) or not row["pair_id"].strip():
            raise DatasetError(f"{where}: column 'pair_id' is empty")
        if check_images:
            _check_row_image(row[image_col], image_col, images, where)
    _check_pairs(frame, source)
    return frame[needed]


def _check_row_image(value: object, image_col: str, images: dict, where: str) -> None:
    if not isinstance(value, str) or not value.strip() or value == "nan":
        raise DatasetError(f"{where}: column {image_col!r} is missing")
    if image_col == "image_path":
        path = Path(value)
        if not path.is_file():
            raise DatasetError(f"{where}: image file {path} does not exist")
        _check_image_bytes(path.read_bytes(), where)
        return
    if len(value) <= IMAGE_REF_MAX:
        target = images.get(value)
        if not isinstance(target, str) or len(target) <= IMAGE_REF_MAX:
            raise DatasetError(f"{where}: column 'image' refers to row {value!r}, which holds no image")
        return
    _check_image_bytes(decode_base64_image(value, where), where)


def _check_pairs(frame: pd.DataFrame, source: str) -> None:
    """Each pair must have exactly one unsafe and one safe item per mode: a lone twin breaks pair metrics."""
    counts = frame.groupby(["pair_id", "mode", "label"]).size().unstack("label", fill_value=0)
    for label in LABELS:
        if label not in counts.columns:
            counts[label] = 0
    bad = counts[(counts["unsafe"] != 1) | (counts["safe"] != 1)]
    if not bad.empty:
        (pair, mode), row = bad.index[0], bad.iloc[0]
        raise DatasetError(
            f"{source}: pair {pair!r} in mode {mode!r} has {row['unsafe']} unsafe and {row['safe']} safe items; "
            "expected exactly one of each"
        )
