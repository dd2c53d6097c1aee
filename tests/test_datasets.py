"""Loading MM-SafetyBench++: the release loader (config-mapped columns) and row validation."""

import base64
import io
import json

import pytest
from PIL import Image

from vlmeval_echosafe.datasets.config import load_config
from vlmeval_echosafe.datasets.demo import load_demo_frame
from vlmeval_echosafe.datasets.release import load_release
from vlmeval_echosafe.datasets.validate import DatasetError, validate_frame

CATS = {"Illegal_Activity": 1, "Fraud": 6}


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def release_dir(tmp_path, monkeypatch):
    """A miniature release in the default (third-party loader) layout: 2 categories x 2 ids x 2 modes x 2 labels."""
    rows = []
    for cat, num in CATS.items():
        for label, folder in (("unsafe", "processed_questions"), ("safe", "processed_questions_safe")):
            entries = {
                str(q): {
                    "Changed Question": f"{label} {cat} {q}",
                    "Key Phrase": f"kp {q}",
                    "Rephrased Question": f"OCR {label} {cat} {q}",
                    "Rephrased Question(SD)": f"SD {label} {cat} {q}",
                }
                for q in range(2)
            }
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / f"{num:02d}-{cat}.json").write_text(json.dumps(entries))
            for q in range(2):
                for mode in ("Gen", "GenOCR"):
                    img = tmp_path / "images" / f"{cat}_{q}_{mode}_{label}.png"
                    img.parent.mkdir(exist_ok=True)
                    img.write_bytes(_png((q * 50, 10, 10)))
                    rows.append(
                        {
                            "category": cat,
                            "mode": mode,
                            "label": label,
                            "id": str(q),
                            "image": str(img.relative_to(tmp_path)),
                        }
                    )
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(tmp_path))
    return tmp_path


def test_release_loads_and_validates(release_dir):
    frame, source = load_release(load_config()["release"], ["Gen"])
    frame = validate_frame(frame, ", ".join(source.row_files))
    assert len(frame) == 8 and set(frame["mode"]) == {"Gen"}
    row = frame[(frame["category"] == "Fraud") & (frame["label"] == "safe")].iloc[0]
    # Default style "changed": both modes ask the entry's "Changed Question".
    assert row["question"] == "safe Fraud 0" and row["key_phrase"] == "kp 0" and row["pair_id"] == "Fraud-0"
    assert source.linking == "id" and source.question_fields == {
        "Gen": "Changed Question",
        "GenOCR": "Changed Question",
    }
    ocr, _ = load_release(load_config()["release"], ["GenOCR"])
    assert not ocr["question"].str.startswith("OCR").any()


def test_release_rephrased_style_asks_mm_safetybench_fields(release_dir):
    gen, source = load_release(load_config()["release"], ["Gen"], "rephrased")
    ocr, _ = load_release(load_config()["release"], ["GenOCR"], "rephrased")
    assert gen["question"].str.startswith("SD ").all() and ocr["question"].str.startswith("OCR ").all()
    assert source.question_fields == {"Gen": "Rephrased Question(SD)", "GenOCR": "Rephrased Question"}


def test_release_renamed_column_names_column_and_config_key(release_dir):
    text = (release_dir / "test.jsonl").read_text().replace('"label"', '"safety_label"')
    (release_dir / "test.jsonl").write_text(text)
    with pytest.raises(DatasetError) as err:
        load_release(load_config()["release"], ["Gen"])
    msg = str(err.value)
    assert "'label'" in msg and "safety_label" in msg and "release.columns.label" in msg


def test_release_missing_question_field(release_dir):
    cfg = dict(load_config()["release"], question_styles={"odd": {"Gen": "Question(SD)", "GenOCR": "x"}})
    with pytest.raises(DatasetError, match=r"release.question_styles.odd.Gen"):
        load_release(cfg, ["Gen"], "odd")


def test_no_local_copy_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("MMSAFETYBENCHPP_ROOT", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(DatasetError) as err:
        load_release(load_config()["release"], ["Gen"])
    msg = str(err.value)
    assert "hf download EchoSafe-MLLM/MM-SafetyBench-plus-plus" in msg and "MMSAFETYBENCHPP_ROOT" in msg


def test_root_that_does_not_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_release(load_config()["release"], ["Gen"])


@pytest.fixture(scope="module")
def demo():
    return load_demo_frame()


def test_demo_frame_validates(demo):
    assert len(validate_frame(demo.copy(), "demo")) == 144


def _first_image_row(frame):
    return frame.index[frame["image"].str.len() > 64][2]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f, r: f.__setitem__("image", f["image"].where(f.index != r, "")), "column 'image' is missing"),
        (
            lambda f, r: f.__setitem__("image", f["image"].where(f.index != r, base64.b64encode(b"x" * 90).decode())),
            "does not decode to an image",
        ),
        (lambda f, r: f.__setitem__("image", f["image"].where(f.index != r, "@@not base64@@" * 8)), "not valid base64"),
        (lambda f, r: f.__setitem__("question", f["question"].where(f.index != r, "  ")), "column 'question' is empty"),
        (lambda f, r: f.__setitem__("category", f["category"].where(f.index != r, "Privacy")), "column 'category'"),
        (lambda f, r: f.__setitem__("label", f["label"].where(f.index != r, "benign")), "column 'label'"),
        (lambda f, r: f.__setitem__("image", f["image"].where(f.index != r, "99999")), "refers to row '99999'"),
    ],
)
def test_bad_rows_are_named(demo, mutate, match):
    frame = demo.copy()
    row = _first_image_row(frame)
    mutate(frame, row)
    with pytest.raises(DatasetError, match=match) as err:
        validate_frame(frame, "src.tsv")
    assert f"row index='{frame.loc[row, 'index']}'" in str(err.value) and "src.tsv" in str(err.value)


def test_duplicate_index_is_named(demo):
    frame = demo.copy()
    frame.loc[5, "index"] = frame.loc[4, "index"]
    with pytest.raises(DatasetError, match=r"duplicate index '4' \(rows \[4, 5\]\)"):
        validate_frame(frame, "src.tsv")


def test_lone_twin_is_rejected(demo):
    frame = demo[~((demo["pair_id"] == "FR-02") & (demo["mode"] == "Gen") & (demo["label"] == "safe"))]
    with pytest.raises(DatasetError, match=r"pair 'FR-02' in mode 'Gen' has 1 unsafe and 0 safe"):
        validate_frame(frame.copy(), "src.tsv")


def test_missing_column_lists_columns(demo):
    with pytest.raises(DatasetError, match=r"missing columns \['pair_id'\]; columns found"):
        validate_frame(demo.drop(columns=["pair_id"]), "src.tsv")
