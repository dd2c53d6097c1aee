"""Where the plugin finds its YAML configuration and keeps its caches.

The YAML that defines datasets, models and defenses ships inside the package, so a wheel installed anywhere runs.
Users see it under the paths the docs name (``wrappers/models.yaml``, ``task_configs/mmsafetybenchpp.yaml``,
``task_configs/lmms_eval/``): in a clone those are links into the package. A folder of one's own YAML, set with
``VLMEVAL_ECHOSAFE_CONFIG``, overrides file by file: each file it holds replaces the packaged one of the same
relative path, every other file comes from the package. ``python -m vlmeval_echosafe.paths`` prints which is which.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_ENV = "VLMEVAL_ECHOSAFE_CONFIG"
# lmms-eval task YAML (`--include_path`). Two levels below the folder holding the package, as task_configs/lmms_eval
# is below a clone's root: the demo tasks' relative `data_files` path then resolves from both places.
LMMS_TASKS_DIR = PACKAGE_DIR / "lmms_tasks"
# User-facing folder -> where it lives in the package; the first matching prefix wins.
_PACKAGE_FOLDERS: tuple[tuple[str, Path], ...] = (
    ("task_configs/lmms_eval/", LMMS_TASKS_DIR),
    ("task_configs/", PACKAGE_DIR / "configs" / "task_configs"),
    ("wrappers/", PACKAGE_DIR / "configs" / "wrappers"),
)
# Every configuration file the code reads, by its user-facing relative path (the layout of an override folder).
CONFIG_FILES: tuple[str, ...] = (
    "wrappers/models.yaml",
    "wrappers/defenses.yaml",
    "task_configs/mmsafetybenchpp.yaml",
    "task_configs/judge_prices.yaml",
    "task_configs/model_shapes.yaml",
    "task_configs/gpu_profiles.yaml",
    "task_configs/lmms_eval/_default_template_yaml",
)


class ConfigError(FileNotFoundError):
    """A configuration file or override folder that cannot be used; the message names the path and the env var."""


def packaged_file(rel: str) -> Path:
    """The packaged copy of configuration file ``rel`` (a user-facing path such as ``wrappers/models.yaml``)."""
    for prefix, folder in _PACKAGE_FOLDERS:
        if rel.startswith(prefix):
            return folder / rel[len(prefix) :]
    raise ConfigError(f"vlmeval-echosafe: {rel!r} is not under wrappers/ or task_configs/")


def override_root() -> Path | None:
    """The folder named by ``VLMEVAL_ECHOSAFE_CONFIG``, checked: it must exist, hold at least one known file and no
    unknown one (a misspelt file name would otherwise be ignored without a word)."""
    env = os.environ.get(CONFIG_ENV)
    if not env:
        return None
    root = Path(env).expanduser()
    if not root.is_dir():
        raise ConfigError(f"vlmeval-echosafe: {CONFIG_ENV}={env} is not a folder")
    found = sorted(
        p.relative_to(root).as_posix()
        for folder in ("wrappers", "task_configs")
        for p in (root / folder).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
    unknown = [f for f in found if f not in CONFIG_FILES]
    if unknown:
        hints = [
            f"{f} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(f, CONFIG_FILES, 1)) else f
            for f in unknown
        ]
        raise ConfigError(
            f"vlmeval-echosafe: {CONFIG_ENV}={root} holds files the plugin does not read: {', '.join(hints)}. "
            f"Known files: {', '.join(CONFIG_FILES)}"
        )
    if not found:
        raise ConfigError(
            f"vlmeval-echosafe: {CONFIG_ENV}={root} holds none of the configuration files "
            f"({', '.join(CONFIG_FILES)}); unset it to use the packaged ones"
        )
    return root


def config_file(rel: str) -> Path:
    """Configuration file ``rel``: the override folder's copy when it has one, else the packaged one."""
    root = override_root()
    if root is not None and (root / rel).is_file():
        return root / rel
    path = packaged_file(rel)
    if not path.is_file():
        raise ConfigError(
            f"vlmeval-echosafe: {rel} is missing from the installed package (looked for {path}). Reinstall "
            f"vlmeval-echosafe, or set {CONFIG_ENV} to a folder that holds {rel}."
        )
    return path


def config_sources() -> dict[str, Path]:
    """Each configuration file and the path it is read from (override or package)."""
    return {rel: config_file(rel) for rel in CONFIG_FILES}


def describe_config() -> str:
    """One line per file for logs: which files come from an override folder, and that the rest are packaged."""
    root = override_root()
    if root is None:
        return f"vlmeval-echosafe: configuration from the package ({PACKAGE_DIR})"
    overridden = [rel for rel, path in config_sources().items() if not path.is_relative_to(PACKAGE_DIR)]
    return (
        f"vlmeval-echosafe: configuration override {CONFIG_ENV}={root}: {', '.join(overridden)}; "
        f"other files from the package ({PACKAGE_DIR})"
    )


def cache_root() -> Path:
    """Cache for things the plugin builds itself (tiny models); override with VLMEVAL_ECHOSAFE_CACHE."""
    env = os.environ.get("VLMEVAL_ECHOSAFE_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "vlmeval_echosafe"
    root.mkdir(parents=True, exist_ok=True)
    return root


def main() -> int:
    """Print where each configuration file is read from and the lmms-eval ``--include_path``."""
    try:
        sources = config_sources()
        print(describe_config())
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    for rel, path in sources.items():
        print(f"  {rel:<46} {path}")
    print(f"lmms-eval --include_path {LMMS_TASKS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
