"""Where the plugin finds its YAML configuration and keeps its caches.

The YAML folders (`wrappers/`, `task_configs/`) live at the repository root so that adding a leaderboard
row is an edit there, not in code; `VLMEVAL_ECHOSAFE_CONFIG` points at another root holding the same folders.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_root() -> Path:
    """The folder that holds `wrappers/` and `task_configs/`."""
    env = os.environ.get("VLMEVAL_ECHOSAFE_CONFIG")
    root = Path(env).expanduser() if env else PACKAGE_DIR.parent
    if not (root / "wrappers").is_dir() or not (root / "task_configs").is_dir():
        raise FileNotFoundError(
            f"vlmeval-echosafe: no wrappers/ and task_configs/ folders under {root}. Install the plugin from "
            "its repository with `pip install -e .`, or set VLMEVAL_ECHOSAFE_CONFIG to a folder holding them."
        )
    return root


def cache_root() -> Path:
    """Cache for things the plugin builds itself (tiny models); override with VLMEVAL_ECHOSAFE_CACHE."""
    env = os.environ.get("VLMEVAL_ECHOSAFE_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "vlmeval_echosafe"
    root.mkdir(parents=True, exist_ok=True)
    return root
