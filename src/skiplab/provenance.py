"""Where a result came from: the git revision of the skiplab source that produced it."""

from __future__ import annotations

import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def git_revision() -> str | None:
    """The commit of the checkout skiplab runs from, with ``+dirty`` when tracked files differ;
    None when skiplab is not run from a git checkout of itself.

    An installed wheel may sit inside some other repository (a virtual environment in a
    project's folder): that repository's commit says nothing about skiplab's code, so the
    checkout counts only when its top level holds this very package at ``src/skiplab``.
    """

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "src" / "skiplab").resolve() != PACKAGE:
        return None
    rev = git("rev-parse", "HEAD")
    if not rev:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return rev + ("+dirty" if dirty else "")
