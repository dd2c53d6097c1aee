"""The next step to name when a release folder is missing, empty or holds something else.

The most likely cause is that the release was never downloaded to that folder, so every such error ends with the
two commands that fix it, spelled for that folder.
"""

from __future__ import annotations

from pathlib import Path


def download_hint(repo: str, folder: Path | str) -> str:
    """``hf download`` into ``folder``, then ``data check`` on it."""
    return (
        f"most likely the release was not downloaded there: on a machine with hub access run `hf download {repo} "
        f"--repo-type dataset --local-dir {folder}`, then `vlmeval-echosafe data check {folder}`"
    )
