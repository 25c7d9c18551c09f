"""How an artefact was made: library versions and the kit's commit, recorded in every report,
shard manifest and leaderboard."""

import platform
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["git_dirty", "versions"]


def versions() -> dict:
    import sklearn
    import torch
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "kit_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return None if out is None else out.strip() or None


def git_dirty() -> bool | None:
    """Whether the kit's checkout has uncommitted changes (``None`` where git cannot say)."""
    out = _git("status", "--porcelain")
    return None if out is None else bool(out.strip())


def _git(*args: str) -> str | None:
    """``git ARGS``'s output in the kit's folder, or ``None`` (no git, not a checkout)."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout
