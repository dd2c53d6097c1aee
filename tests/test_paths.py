"""Configuration files: packaged, reachable under the documented clone paths, overridable file by file."""

from pathlib import Path

import pytest
import yaml

from vlmeval_echosafe import paths
from vlmeval_echosafe.paths import CONFIG_ENV, CONFIG_FILES, ConfigError, config_file, packaged_file

REPO = Path(__file__).resolve().parents[1]


def test_every_config_file_ships_inside_the_package():
    for rel in CONFIG_FILES:
        path = packaged_file(rel)
        assert path.is_file() and path.is_relative_to(paths.PACKAGE_DIR), rel
        yaml.safe_load(path.read_text(encoding="utf-8").replace("!function", ""))


def test_clone_paths_are_the_packaged_files():
    """The README's paths (wrappers/…, task_configs/…, --include_path task_configs/lmms_eval) in a clone."""
    for rel in CONFIG_FILES:
        assert (REPO / rel).resolve() == packaged_file(rel).resolve(), rel
    assert (REPO / "task_configs/lmms_eval").resolve() == paths.LMMS_TASKS_DIR.resolve()


def test_demo_task_data_file_resolves_through_the_link_and_in_the_package():
    """lmms-eval joins data_files to the task folder as given, and `datasets` then normalises the path as text:
    the relative path must reach the demo TSV both through the clone's link and from the package folder."""
    import os

    text = yaml.safe_load((paths.LMMS_TASKS_DIR / "mmsafetybenchpp_demo.yaml").read_text().replace("!function", ""))
    rel = text["dataset_kwargs"]["data_files"]["test"]
    demo = (paths.PACKAGE_DIR / "data" / "mmsafetybenchpp_demo.tsv").resolve()
    for folder in (REPO / "task_configs" / "lmms_eval", paths.LMMS_TASKS_DIR):
        assert Path(os.path.normpath(folder / rel)).resolve() == demo, folder


@pytest.fixture
def override(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path))
    return tmp_path


def test_override_replaces_only_the_files_it_holds(override):
    (override / "wrappers").mkdir()
    (override / "wrappers" / "models.yaml").write_text("models: {}\n")
    assert config_file("wrappers/models.yaml") == override / "wrappers" / "models.yaml"
    assert config_file("wrappers/defenses.yaml") == packaged_file("wrappers/defenses.yaml")
    assert config_file("task_configs/mmsafetybenchpp.yaml") == packaged_file("task_configs/mmsafetybenchpp.yaml")
    line = paths.describe_config()
    assert "wrappers/models.yaml" in line and "wrappers/defenses.yaml" not in line


def test_override_with_a_misspelt_file_is_refused(override):
    (override / "wrappers").mkdir()
    (override / "wrappers" / "model.yaml").write_text("models: {}\n")
    with pytest.raises(ConfigError, match=r"model\.yaml \(did you mean wrappers/models\.yaml\?\)"):
        config_file("wrappers/models.yaml")


def test_override_without_any_known_file_is_refused(override):
    with pytest.raises(ConfigError, match="holds none of the configuration files"):
        config_file("wrappers/models.yaml")


def test_override_that_is_not_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=f"{CONFIG_ENV}=.*nope is not a folder"):
        config_file("wrappers/models.yaml")


def test_paths_command_lists_every_file(capsys, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert paths.main() == 0
    out = capsys.readouterr().out
    assert all(rel in out for rel in CONFIG_FILES) and f"--include_path {paths.LMMS_TASKS_DIR}" in out
