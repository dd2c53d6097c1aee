"""A release-shaped folder at full scale (2,844 rows, tests/release_layout.py): `data check`, loading, detection.

Each layout the loader claims to read is written, checked and loaded; each broken copy must fail naming what is
wrong. The texts encode their category, twin and item number, and the image files their item number, so a
row linked to the wrong question entry shows up as a mismatch.
"""

import json
import re
import shutil

import pandas as pd
import pytest
from release_layout import write_release

from vlmeval_echosafe.datasets.check import failure_report_path
from vlmeval_echosafe.datasets.check import main as data_main
from vlmeval_echosafe.datasets.config import load_config
from vlmeval_echosafe.datasets.schema import CATEGORIES, EXPECTED_PAIRS, LABELS, MODES
from vlmeval_echosafe.datasets.source import MANIFEST_NAME, find_manifest
from vlmeval_echosafe.datasets.validate import DatasetError
from vlmeval_echosafe.datasets.variants import load_variant_source
from vlmeval_echosafe.launcher import main as launcher_main


@pytest.fixture(scope="module")
def position_release(tmp_path_factory):
    """The default layout at full scale: no id column, category names without prefix, images as files."""
    return write_release(tmp_path_factory.mktemp("release") / "mmsbpp")


@pytest.fixture
def copy(position_release, tmp_path):
    """A private copy of the full-scale folder to break."""
    out = tmp_path / "copy"
    shutil.copytree(position_release, out, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    return out


def _check(folder, capsys) -> tuple[int, str]:
    code = launcher_main(["data", "check", str(folder), "--no-progress"])
    return code, capsys.readouterr().out


def _load(folder, monkeypatch, name="MMSafetyBenchPP"):
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(folder))
    return load_variant_source(name)


def _assert_linked_right(frame: pd.DataFrame) -> None:
    """Each row's question names the row's own category, twin and item; its image file names the same item."""
    for row in frame.itertuples():
        number = row.pair_id.rsplit("-", 1)[1]
        assert row.question.endswith(f"{row.label} {row.category.lower()} activity {number}."), row
        if isinstance(getattr(row, "image_path", None), str):
            assert re.search(rf"/{row.mode}/{row.category}/{number}(_{row.label})?\.png$", row.image_path), row


def test_full_scale_folder_passes_check_and_loads(position_release, capsys, monkeypatch):
    code, out = _check(position_release, capsys)
    assert code == 0, out
    assert "linking:    position (auto: the rows have no id column 'id'" in out
    assert "style 'changed': Gen 'Changed Question', GenOCR 'Changed Question'" in out
    assert "other style 'rephrased': every entry has its fields" in out
    assert "twins sharing an image, Gen: 711 pairs" in out and "twins sharing an image, GenOCR: 0 pairs" in out
    assert out.count("\n  [Gen unsafe]") == 2 and out.count("\n  [GenOCR safe]") == 2  # two samples per group
    assert re.search(r"all\s+711\s+711\s+711\s+711\s+711", out)
    manifest = json.loads((position_release / MANIFEST_NAME).read_text())
    files = [p for p in position_release.rglob("*") if p.is_file() and p.name != MANIFEST_NAME]
    assert manifest["passed"] is True and len(manifest["files"]) == len(files) == 1 + 12 + 711 + 2 * 711

    frame, source = _load(position_release, monkeypatch)
    assert frame.groupby(["mode", "label"]).size().to_dict() == {(m, lab): 711 for m in MODES for lab in LABELS}
    assert frame.groupby(["category", "mode", "label"]).size().unstack(["mode", "label"]).min(axis=1).to_dict() == (
        EXPECTED_PAIRS
    )
    _assert_linked_right(frame)
    assert source.linking == "position" and source.images == "files" and source.rows == 2844
    assert source.manifest["passed"] is True and source.manifest["files_match"] is True
    assert source.manifest["sha256"] == find_manifest(position_release)["sha256"]


def test_rephrased_variant_asks_mm_safetybench_fields(position_release, monkeypatch):
    frame, source = _load(position_release, monkeypatch, "MMSafetyBenchPP_Rephrased")
    assert source.question_style == "rephrased" and len(frame) == 2844
    gen, ocr = frame[frame["mode"] == "Gen"], frame[frame["mode"] == "GenOCR"]
    assert gen["question"].str.startswith("The image shows").all() and gen["question"].str.endswith(" SD]").all()
    assert ocr["question"].str.startswith("The bottom of the image").all()


@pytest.mark.parametrize(
    "options",
    [
        {"layout": "id"},
        {"prefixed": True},
        {"embedded": True, "prefixed": True},
        {"embedded": True, "layout": "id"},
    ],
    ids=["id-column", "NN-prefixed", "embedded-sharded-prefixed", "embedded-sharded-id"],
)
def test_other_layouts_pass_check_and_load(options, tmp_path, capsys, monkeypatch):
    folder = write_release(tmp_path / "mmsbpp", **options)
    code, out = _check(folder, capsys)
    assert code == 0, out
    frame, source = _load(folder, monkeypatch)
    assert len(frame) == 2844 and frame.groupby(["mode", "label"]).size().eq(711).all()
    _assert_linked_right(frame)
    assert source.linking == ("id" if options.get("layout") == "id" else "position")
    assert source.images == ("embedded" if options.get("embedded") else "files")
    if options.get("prefixed"):
        assert source.category_spellings["06-Fraud"] == "Fraud" and set(source.category_spellings.values()) == set(
            CATEGORIES
        )
    if options.get("embedded"):
        assert len(source.row_files) == 2 and "twins sharing an image, Gen: 711 pairs" in out


def test_renamed_column_fails_naming_it(copy, capsys):
    rows = (copy / "test.jsonl").read_text().replace('"label":', '"safety_label":')
    (copy / "test.jsonl").write_text(rows)
    code, out = _check(copy, capsys)
    assert code == 1
    assert "FAILED: 1 problem(s)" in out and "column 'label' (for label) not found" in out
    assert "safety_label" in out and "release.columns.label" in out and str(copy / "test.jsonl") in out
    assert not (copy / MANIFEST_NAME).exists()  # a failed check leaves the folder as it was
    assert json.loads(failure_report_path(copy).read_text())["passed"] is False


def test_missing_image_fails_naming_file_and_row(copy, capsys, monkeypatch):
    missing = copy / "images" / "GenOCR" / "Fraud" / "17_safe.png"
    missing.unlink()
    code, out = _check(copy, capsys)
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(lines) == 1 and f"image file {missing} does not exist" in lines[0]
    line_no = int(re.search(r"test\.jsonl: line (\d+)", lines[0]).group(1))
    row = json.loads((copy / "test.jsonl").read_text().splitlines()[line_no - 1])
    assert row == {"category": "Fraud", "mode": "GenOCR", "label": "safe", "image": "images/GenOCR/Fraud/17_safe.png"}
    with pytest.raises(DatasetError, match="17_safe.png does not exist"):  # the run's own validation agrees
        _load(copy, monkeypatch)


def test_undecodable_image_fails(copy, capsys):
    (copy / "images" / "Gen" / "Sex" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out = _check(copy, capsys)
    assert code == 1
    bad = copy / "images" / "Gen" / "Sex" / "3.png"
    assert out.count(f"image file {bad} does not decode") == 1  # decoded once, though both twins show it
    assert out.count("same image as a row above, which failed") == 1


@pytest.mark.parametrize("label", ["unsafe", "safe"])
def test_missing_twin_fails_counts_and_pairs(copy, capsys, label):
    """Drop the last Fraud Gen row of one label: the count and the now lone twin are both named (either label)."""
    lines = (copy / "test.jsonl").read_text().splitlines()
    last = max(
        i
        for i, line in enumerate(lines)
        if json.loads(line)["category"] == "Fraud"
        and json.loads(line)["mode"] == "Gen"
        and json.loads(line)["label"] == label
    )
    (copy / "test.jsonl").write_text("\n".join(lines[:last] + lines[last + 1 :]) + "\n")
    code, out = _check(copy, capsys)
    assert code == 1
    assert f"Fraud Gen {label}: 153 rows, expected 154" in out
    other = "safe" if label == "unsafe" else "unsafe"
    assert f"pair 'Fraud-153' Gen: labels ['{other}'], expected one unsafe and one safe" in out


def test_extra_position_row_is_named_with_its_question_file(copy, capsys):
    """A group with more rows than its question file has entries: the row past the end is named."""
    extra = {"category": "Malware_Generation", "mode": "GenOCR", "label": "unsafe", "image": "images/Gen/Sex/0.png"}
    with (copy / "test.jsonl").open("a") as fh:
        fh.write(json.dumps(extra) + "\n")
    code, out = _check(copy, capsys)
    assert code == 1
    assert "question id '44' (it is unsafe Malware_Generation GenOCR row number 44)" in out
    assert "03-Malware_Generation.json (ids 0..43)" in out


def test_wrong_number_prefix_is_refused(copy, capsys):
    rows = (copy / "test.jsonl").read_text().replace('"category":"Fraud"', '"category":"02-Fraud"', 1)
    (copy / "test.jsonl").write_text(rows)
    code, out = _check(copy, capsys)
    assert code == 1 and "category '02-Fraud': prefix 02 is not Fraud's number 06" in out


def test_manifest_goes_stale_when_the_folder_changes(copy, capsys, monkeypatch):
    assert _check(copy, capsys)[0] == 0
    assert find_manifest(copy)["files_match"] is True
    (copy / "images" / "Gen" / "Fraud" / "0.png").write_bytes(b"\x00" * 7)
    assert find_manifest(copy)["files_match"] is False


def test_forced_id_linking_without_the_column_names_the_key(position_release, monkeypatch):
    cfg = dict(load_config()["release"], linking="id")
    from vlmeval_echosafe.datasets.release import load_release

    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(position_release))
    with pytest.raises(DatasetError, match=r"column 'id' \(for question_id\) not found.*release.columns.question_id"):
        load_release(cfg, ["Gen"])


def test_not_a_folder_exits_2(tmp_path, capsys):
    assert data_main(["check", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("contents", [{}, {"README.md": "# some other dataset\n"}], ids=["empty", "wrong"])
def test_failed_check_leaves_the_folder_as_it_was_and_names_the_download(contents, tmp_path, capsys):
    """An empty folder stays empty and a wrong one keeps exactly its files; the message names the likely cause and
    the two commands, spelled for that folder, and the report lies outside it."""
    folder = tmp_path / "mmsbpp"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    code, out = _check(folder, capsys)
    assert code == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(contents)
    repo = load_config()["release"]["hf_repo"]
    assert "not downloaded there" in out
    assert f"hf download {repo} --repo-type dataset --local-dir {folder}" in out
    assert f"vlmeval-echosafe data check {folder}" in out
    report = failure_report_path(folder)
    assert f"report:   {report}" in out and json.loads(report.read_text())["passed"] is False


def test_missing_folder_names_the_download(tmp_path, capsys):
    code = launcher_main(["data", "check", str(tmp_path / "absent")])
    err = capsys.readouterr().err
    assert code == 2 and "is not a folder" in err and f"--local-dir {tmp_path / 'absent'}" in err
    assert not (tmp_path / "absent").exists()


def test_the_loader_names_the_download_for_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSAFETYBENCHPP_ROOT", str(tmp_path))
    hint = r"none of the row files .* not downloaded there: .*hf download .*data check"
    with pytest.raises(DatasetError, match=hint):
        load_variant_source("MMSafetyBenchPP_Gen")
    assert list(tmp_path.iterdir()) == []
