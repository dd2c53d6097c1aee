"""The shipped MMSafetyBenchPP_Demo split: pinned checksum, pair structure, images, and sync with its YAML."""

from __future__ import annotations

import base64
import hashlib
import io

import pandas as pd
import pytest
from PIL import Image

from vlmeval_echosafe.datasets import demo
from vlmeval_echosafe.datasets.schema import CATEGORIES, COLUMNS, LABELS, MODES


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return demo.load_demo_frame()


def _image_cell(frame: pd.DataFrame, row: pd.Series) -> str:
    """Follow VLMEvalKit's rule: a cell of <= 64 characters is the index of the row holding the image."""
    cell = row["image"]
    return frame.loc[frame["index"] == int(cell), "image"].iloc[0] if len(cell) <= 64 else cell


def test_shipped_file_matches_pinned_checksum() -> None:
    assert hashlib.sha256(demo.DEMO_TSV.read_bytes()).hexdigest() == demo.DEMO_SHA256


def test_structure(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == 144
    assert frame["index"].tolist() == list(range(144))
    assert set(frame["category"]) == set(CATEGORIES)
    for category, rows in frame.groupby("category"):
        assert rows["pair_id"].nunique() >= 6, category
        assert set(rows["mode"]) == set(MODES), category
    counts = frame.groupby(["pair_id", "mode", "label"]).size()
    assert (counts == 1).all()
    assert len(counts) == frame["pair_id"].nunique() * len(MODES) * len(LABELS)
    assert frame.groupby("pair_id")["category"].nunique().eq(1).all()


def test_twins_differ_in_question_and_share_only_the_gen_image(frame: pd.DataFrame) -> None:
    for (pair_id, mode), rows in frame.groupby(["pair_id", "mode"]):
        unsafe = rows[rows["label"] == "unsafe"].iloc[0]
        safe = rows[rows["label"] == "safe"].iloc[0]
        assert unsafe["question"] != safe["question"], (pair_id, mode)
        assert unsafe["key_phrase"] != safe["key_phrase"], (pair_id, mode)
        same_image = _image_cell(frame, unsafe) == _image_cell(frame, safe)
        assert same_image == (mode == "Gen"), (pair_id, mode)
        if mode == "Gen":
            assert safe["image"] == str(unsafe["index"])


def test_every_image_decodes_to_224(frame: pd.DataFrame) -> None:
    for _, row in frame.iterrows():
        with Image.open(io.BytesIO(base64.b64decode(_image_cell(frame, row)))) as img:
            assert img.size == (224, 224)
            img.load()


def test_build_reproduces_shipped_metadata(frame: pd.DataFrame) -> None:
    built = demo.build_demo_frame()
    meta = [c for c in COLUMNS if c != "image"]
    assert tuple(built.columns) == COLUMNS
    assert built[meta].astype(str).values.tolist() == frame[meta].astype(str).values.tolist()
    for cell in built["image"]:  # bytes may differ across Pillow versions; only require valid images
        if len(cell) > 64:
            Image.open(io.BytesIO(base64.b64decode(cell))).load()
    assert demo.check_demo() == []


def test_render_image_modes() -> None:
    pair = demo.load_pairs()[0]
    gen = [demo.render_image(pair, "Gen", twin) for twin in LABELS]
    ocr = [demo.render_image(pair, "GenOCR", twin) for twin in LABELS]
    assert all(img.mode == "RGB" and img.size == (224, 224) for img in gen + ocr)
    assert gen[0].tobytes() == gen[1].tobytes()
    assert ocr[0].tobytes() != ocr[1].tobytes()
    band = ocr[0].crop((0, 224 - demo.BAND_HEIGHT, 224, 224)).convert("L")
    assert band.getextrema() == (0, 255)  # black typography on white
    with pytest.raises(ValueError):
        demo.render_image(pair, "SD", "unsafe")


def test_tampered_file_raises_checksum_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(demo.DEMO_TSV.read_bytes())
    data[data.index(b"How can I")] = ord("W")
    tampered = tmp_path / "mmsafetybenchpp_demo.tsv"
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(demo, "DEMO_TSV", tampered)
    with pytest.raises(RuntimeError) as err:
        demo.load_demo_frame()
    message = str(err.value)
    assert str(tampered) in message
    assert demo.DEMO_SHA256 in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert demo.check_demo() == [message]


def test_cli_write_and_check(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.tsv"
    assert demo.main(["--write", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == hashlib.sha256(out.read_bytes()).hexdigest()
    assert demo.main(["--check"]) == 0


def test_render_falls_back_to_bitmap_font_on_old_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    original = demo.ImageFont.load_default

    def load_default(size: float | None = None):  # Pillow < 10.1 has no `size`
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return original()

    monkeypatch.setattr(demo.ImageFont, "load_default", load_default)
    img = demo.render_image(demo.load_pairs()[0], "GenOCR", "unsafe")
    assert img.size == (224, 224)
    assert img.crop((0, 224 - demo.BAND_HEIGHT, 224, 224)).convert("L").getextrema()[0] < 128
