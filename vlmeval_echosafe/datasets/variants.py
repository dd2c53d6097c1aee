"""One benchmark variant (a name in task_configs/mmsafetybenchpp.yaml) as a validated frame, for every harness.

VLMEvalKit's dataset class and the lmms-eval task both load rows here, so the two harnesses see the same items
in the same order.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from . import demo
from .config import load_config, variant
from .release import load_release
from .source import DataSource, announce
from .validate import IMAGE_REF_MAX, DatasetError, validate_frame


def load_variant(name: str) -> pd.DataFrame:
    """The rows of variant ``name`` in the plugin's schema (see schema.COLUMNS), checked by validate_frame."""
    return load_variant_source(name)[0]


def load_variant_source(name: str) -> tuple[pd.DataFrame, DataSource]:
    """The rows of variant ``name`` and what their load read and detected (printed to stderr here)."""
    spec = variant(name)
    if spec["source"] == "demo":
        frame = demo.load_demo_frame()
        source = DataSource(kind="demo", rows=len(frame), row_files=[str(demo.DEMO_TSV)], checksum=demo.DEMO_SHA256)
        where = "MMSafetyBenchPP_Demo (shipped demo split)"
    elif spec["source"] == "release":
        frame, source = load_release(load_config()["release"], list(spec["modes"]), spec.get("question_style"))
        where = ", ".join(source.row_files)
    else:
        raise DatasetError(f"variant {name}: unknown source {spec['source']!r} (expected demo or release)")
    frame = select_variant(name, frame, where)
    source = replace(source, rows=len(frame))
    announce(source)
    return frame, source


def select_variant(name: str, frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Restrict rows already in the plugin's schema to what variant ``name`` keeps (modes, pairs), then validate."""
    spec = variant(name)
    frame = frame[frame["mode"].isin(list(spec["modes"]))]
    if spec.get("max_pairs_per_category"):  # a smaller variant: the first N pairs of every category
        keep = frame.drop_duplicates("pair_id").groupby("category")["pair_id"].head(int(spec["max_pairs_per_category"]))
        frame = frame[frame["pair_id"].isin(set(keep))]
    return validate_frame(frame, source)


def resolve_image_refs(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace image cells that name another row (<= 64 characters, VLMEvalKit's sharing convention) with that
    row's image, for harnesses that read every row on its own."""
    if "image" not in frame.columns:
        return frame
    images = dict(zip(frame["index"].astype(str), frame["image"], strict=True))
    resolved = [images[v] if isinstance(v, str) and len(v) <= IMAGE_REF_MAX else v for v in frame["image"]]
    return frame.assign(image=resolved)


def decode_image(text: str) -> Image.Image:
    """A base64 image cell as PIL, converted exactly as VLMEvalKit's ``decode_base64_to_image`` does before it dumps
    the file the model reads (palette / alpha images become RGB), so both harnesses feed the model the same pixels."""
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    if image.mode in ("RGBA", "P", "LA"):
        image = image.convert("RGB")
    return image


def image_files(frame: pd.DataFrame, folder: Path) -> Callable[[Any], str]:
    """``row -> path`` of the row's image file, for a judge that looks at the image the model saw.

    Release rows point at their file (``image_path``); embedded images (base64, or a reference to another row's)
    are written once as ``<folder>/<index>.png``, converted as ``decode_image`` converts them for the model.
    """
    frame = resolve_image_refs(frame)
    by_index = {str(i): row for i, row in zip(frame["index"], frame.to_dict("records"), strict=True)}

    def path_for(row: Any) -> str:
        index = str(row["index"])
        rec = by_index.get(index)
        if rec is None:
            raise DatasetError(f"row index {index} is not in the dataset's rows: no image to show the judge")
        if isinstance(rec.get("image_path"), str) and rec["image_path"]:
            return rec["image_path"]
        out = folder / f"{index}.png"
        if not out.exists():
            folder.mkdir(parents=True, exist_ok=True)
            decode_image(rec["image"]).save(out)
        return str(out)

    return path_for
