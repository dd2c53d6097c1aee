"""MMSafetyBenchPP_Demo: a small contextual-safety split written by this project, shipped inside the package.

Why it exists: the plugin must run end to end offline (CI, first-time users) without the Hugging Face
release. The pairs are text in `demo_pairs.yaml`; the pictures are simple PIL drawings made here, so the split
carries no third-party images. The shipped TSV is pinned by `DEMO_SHA256`: a corrupted or edited install must
fail loudly instead of silently scoring a different benchmark.

Regenerate after editing the YAML: ``python -m vlmeval_echosafe.datasets.demo --write`` (prints the new sha256
to put into `DEMO_SHA256`); verify with ``--check``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image, ImageDraw, ImageFont

from ..paths import PACKAGE_DIR
from .schema import CATEGORIES, COLUMNS, LABELS, MODES

PAIRS_YAML = Path(__file__).resolve().parent / "demo_pairs.yaml"
DEMO_TSV = PACKAGE_DIR / "data" / "mmsafetybenchpp_demo.tsv"
DEMO_SHA256 = "036756e9d0df4dc20d588d37637007522fc71f2a967ba5851be7d41215b9766f"

IMAGE_SIZE = 224
BAND_HEIGHT = 52  # white typography band of GenOCR images, drawn over the bottom of the scene
PNG_COLOURS = 32  # palette size: the drawings use few colours, and a palette keeps the TSV small

# Light background per category (the caption is dark text on it) and darker colours for the shapes.
_BACKGROUND: dict[str, tuple[int, int, int]] = {
    "Illegal_Activity": (200, 214, 236),
    "HateSpeech": (240, 206, 200),
    "Malware_Generation": (204, 232, 208),
    "Physical_Harm": (244, 226, 188),
    "Fraud": (224, 208, 238),
    "Sex": (238, 214, 228),
}
_SHAPE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (52, 76, 128),
    (150, 60, 50),
    (60, 120, 70),
    (170, 120, 40),
    (100, 70, 140),
    (70, 70, 70),
)
_TWIN_FIELDS = ("key_phrase", "question_gen", "question_ocr")
_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def load_pairs(path: Path = PAIRS_YAML) -> list[dict]:
    """Read and validate the pairs, sorted by schema category order then pair id (the TSV's row order)."""
    pairs = yaml.safe_load(path.read_text(encoding="utf-8"))["pairs"]
    seen: set[str] = set()
    for pair in pairs:
        pid = pair.get("pair_id")
        if pid in seen:
            raise ValueError(f"{path}: duplicate pair_id {pid!r}")
        seen.add(pid)
        if pair.get("category") not in CATEGORIES:
            raise ValueError(f"{path}: pair {pid!r} has unknown category {pair.get('category')!r}")
        if not pair.get("scene"):
            raise ValueError(f"{path}: pair {pid!r} has no scene")
        for label in LABELS:
            missing = [f for f in _TWIN_FIELDS if not (pair.get(label) or {}).get(f)]
            if missing:
                raise ValueError(f"{path}: pair {pid!r} twin {label!r} lacks {missing}")
    order = list(CATEGORIES)
    return sorted(pairs, key=lambda p: (order.index(p["category"]), p["pair_id"]))


def _font(size: int) -> _Font:
    """Pillow's bundled font at `size`; Pillow < 10.1 (or no FreeType) only has the fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: _Font, width: int) -> list[str]:
    """Greedy word wrap measured in pixels."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: list[str],
    font: _Font,
    top: int,
    height: int,
    fill: tuple[int, int, int],
) -> None:
    """Draw lines centred horizontally, as a block centred vertically in [top, top + height)."""
    line_h = font.getbbox("Ag")[3] + 2
    y = top + (height - line_h * len(lines)) // 2
    for line in lines:
        x = (IMAGE_SIZE - draw.textlength(line, font=font)) / 2
        draw.text((x, y), line, fill=fill, font=font)
        y += line_h


def render_image(pair: dict, mode: str, twin: str) -> Image.Image:
    """Draw the pair's scene (224x224 RGB), deterministic in the pair's fields.

    Gen: the scene only, identical for both twins (same context). GenOCR: the same scene with the twin's key
    phrase as black typography in a white band at the bottom, as in MM-SafetyBench's SD+TYPO images.
    """
    if mode not in MODES or twin not in LABELS:
        raise ValueError(f"mode must be one of {MODES} and twin one of {LABELS}; got {mode!r}, {twin!r}")
    background = _BACKGROUND[pair["category"]]
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 150, IMAGE_SIZE, IMAGE_SIZE), fill=tuple(c - 40 for c in background))  # ground
    # Shapes placed from a hash of the pair id (not Python's salted hash()): every build draws the same scene.
    seed = hashlib.sha256(pair["pair_id"].encode()).digest()
    for i in range(4):
        b = seed[i * 6 : i * 6 + 6]
        x0, y0 = 12 + b[0] % 140, 40 + b[1] % 100
        w, h = 30 + b[2] % 50, 24 + b[3] % 40
        colour = _SHAPE_COLOURS[b[4] % len(_SHAPE_COLOURS)]
        box = (x0, y0, min(x0 + w, IMAGE_SIZE - 8), min(y0 + h, 168))
        kind = b[5] % 3
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]), (box[2], box[3])], fill=colour)
    caption_font = _font(11)
    caption = _wrap(draw, pair["scene"], caption_font, IMAGE_SIZE - 12)[:2]
    _draw_lines(draw, caption, caption_font, 2, 30, (20, 20, 20))
    if mode == "GenOCR":
        top = IMAGE_SIZE - BAND_HEIGHT
        draw.rectangle((0, top, IMAGE_SIZE, IMAGE_SIZE), fill=(255, 255, 255))
        phrase = pair[twin]["key_phrase"]
        for size in range(22, 9, -1):  # the largest size whose text fits the band in at most two lines
            font = _font(size)
            lines = _wrap(draw, phrase, font, IMAGE_SIZE - 10)
            fits = all(draw.textlength(line, font=font) <= IMAGE_SIZE - 10 for line in lines)
            if len(lines) <= 2 and fits:
                break
        _draw_lines(draw, lines, font, top, BAND_HEIGHT, (0, 0, 0))
    return img


def _encode_png(img: Image.Image) -> str:
    """Base64 PNG with a small fixed palette (no dithering, so the bytes are deterministic and compact)."""
    buf = io.BytesIO()
    img.quantize(colors=PNG_COLOURS, dither=Image.Dither.NONE).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def build_demo_frame(pairs_path: Path = PAIRS_YAML) -> pd.DataFrame:
    """The demo split as a VLMEvalKit TSV frame; rows ordered by category, pair, mode, unsafe before safe.

    A row whose image equals an earlier row's (the two Gen twins) stores that row's index instead of the
    image; VLMEvalKit reads an image cell of <= 64 characters as such a reference.
    """
    rows: list[dict] = []
    first_index: dict[str, int] = {}
    for pair in load_pairs(pairs_path):
        for mode in MODES:
            for label in LABELS:
                twin = pair[label]
                index = len(rows)
                encoded = _encode_png(render_image(pair, mode, label))
                image = str(first_index[encoded]) if encoded in first_index else encoded
                first_index.setdefault(encoded, index)
                rows.append(
                    {
                        "index": index,
                        "pair_id": pair["pair_id"],
                        "category": pair["category"],
                        "mode": mode,
                        "label": label,
                        "question": twin["question_gen" if mode == "Gen" else "question_ocr"],
                        "key_phrase": twin["key_phrase"],
                        "image": image,
                    }
                )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_demo(out: Path = DEMO_TSV) -> str:
    """Write the demo TSV to `out` and return its sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    build_demo_frame().to_csv(out, sep="\t", index=False, lineterminator="\n")
    return _sha256(out.read_bytes())


def load_demo_frame() -> pd.DataFrame:
    """Read the shipped demo TSV after checking its sha256 against `DEMO_SHA256`."""
    data = DEMO_TSV.read_bytes()
    actual = _sha256(data)
    if actual != DEMO_SHA256:
        raise RuntimeError(
            f"MMSafetyBenchPP_Demo: {DEMO_TSV} is corrupted or was edited: expected sha256 {DEMO_SHA256}, "
            f"got {actual}. Reinstall vlmeval-echosafe; maintainers regenerate it with "
            "`python -m vlmeval_echosafe.datasets.demo --write` and update DEMO_SHA256."
        )
    text_columns = {c: str for c in COLUMNS if c != "index"}
    frame = pd.read_csv(io.BytesIO(data), sep="\t", dtype=text_columns, keep_default_na=False)
    if tuple(frame.columns) != COLUMNS:
        raise RuntimeError(f"MMSafetyBenchPP_Demo: {DEMO_TSV} has columns {list(frame.columns)}, expected {COLUMNS}")
    return frame


def check_demo() -> list[str]:
    """Problems with the shipped file: its checksum, and whether it still matches `demo_pairs.yaml`.

    Images are not compared: their PNG bytes may differ across Pillow versions.
    """
    try:
        shipped = load_demo_frame()
    except RuntimeError as err:
        return [str(err)]
    built = build_demo_frame()
    meta = [c for c in COLUMNS if c != "image"]
    if shipped.shape != built.shape or not shipped[meta].equals(built[meta]):
        return [f"{DEMO_TSV} no longer matches {PAIRS_YAML}; regenerate it with --write"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmeval_echosafe.datasets.demo", description=__doc__.split("\n")[0]
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate the demo TSV and print its sha256")
    action.add_argument("--check", action="store_true", help="verify the shipped TSV (checksum, in sync with YAML)")
    parser.add_argument("--out", type=Path, default=DEMO_TSV, help=f"where --write puts the TSV (default {DEMO_TSV})")
    args = parser.parse_args(argv)
    if args.write:
        digest = write_demo(args.out)
        print(digest)
        if args.out.resolve() == DEMO_TSV and digest != DEMO_SHA256:
            print(f"DEMO_SHA256 in {Path(__file__).resolve()} must be updated to {digest}", file=sys.stderr)
        return 0
    problems = check_demo()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{DEMO_TSV}: OK ({DEMO_SHA256})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
