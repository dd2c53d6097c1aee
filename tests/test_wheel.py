"""A wheel built from the repository installs into a bare folder and registers every name from elsewhere.

Offline: ``pip wheel --no-deps --no-build-isolation`` builds with the environment's setuptools, and the install
takes no dependencies (they are the test environment's own). The repository is not on the import path of the
registering process, so everything it reads must come from the installed package.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vlmeval_echosafe.datasets.config import load_config
from vlmeval_echosafe.paths import CONFIG_FILES
from vlmeval_echosafe.catalog import defense_entries, model_entries

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
)

# Runs in the installed copy: register, then print what the host's registries hold and where files came from.
PROBE = """
import json, vlmeval_echosafe
from vlmeval_echosafe import register
from vlmeval_echosafe.paths import config_sources
from vlmeval_echosafe.datasets.variants import load_variant
register()
import vlmeval.config, vlmeval.dataset
print(json.dumps({
    "package": vlmeval_echosafe.__file__,
    "models": sorted(vlmeval.config.supported_VLM),
    "datasets": sorted(vlmeval.dataset.SUPPORTED_DATASETS),
    "configs": {k: str(v) for k, v in config_sources().items()},
    "demo_mini_rows": len(load_variant("MMSafetyBenchPP_DemoMini")),
}))
"""


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_NOT_SOURCE)  # a clean tree: no build/ or egg-info reused
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(src), cwd=tmp)
    (found,) = (tmp / "dist").glob("vlmeval_echosafe-*.whl")
    return found


def test_wheel_carries_the_configuration(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {
        "vlmeval_echosafe/configs/wrappers/models.yaml",
        "vlmeval_echosafe/configs/wrappers/defenses.yaml",
        "vlmeval_echosafe/configs/task_configs/mmsafetybenchpp.yaml",
        "vlmeval_echosafe/configs/task_configs/judge_prices.yaml",
        "vlmeval_echosafe/lmms_tasks/_default_template_yaml",
        "vlmeval_echosafe/data/mmsafetybenchpp_demo.tsv",
    }
    assert packaged <= names
    tasks = {p.name for p in (REPO / "vlmeval_echosafe" / "lmms_tasks").iterdir()}
    assert {f"vlmeval_echosafe/lmms_tasks/{t}" for t in tasks} <= names
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB")


def test_installed_wheel_registers_every_name_from_another_folder(wheel, tmp_path):
    target, elsewhere = tmp_path / "target", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=elsewhere)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VLMEVAL_ECHOSAFE_CONFIG")}
    env.update(PYTHONPATH=str(target), LMUData=str(tmp_path / "LMUData"), HF_HUB_OFFLINE="1")
    (tmp_path / "LMUData").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["package"]).is_relative_to(target)
    assert all(Path(p).is_relative_to(target) for p in got["configs"].values()) and set(got["configs"]) == set(
        CONFIG_FILES
    )
    # Every name the repository's YAML defines: datasets, models, each defense around each plugin model, Base_ rows.
    assert set(load_config()["variants"]) <= set(got["datasets"])
    models = set(model_entries())
    defenses, _ = defense_entries()
    expected = models | {f"{d}_{m}" for d in defenses for m in models} | {f"Base_{m}" for m in models}
    assert expected <= set(got["models"]), sorted(expected - set(got["models"]))[:10]
    assert got["demo_mini_rows"] == 12
