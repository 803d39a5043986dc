"""Where a result came from, written into results.json (``provenance``) so that a result
found on disk without orch's run state can still be traced: the code that ran (git commit,
uncommitted changes), the checkpoints it loaded (sha256), the attention kernels and AMP
dtypes it actually used, and the library versions beyond torch's.

``code_digest`` is also the code part of the latent and feature cache keys: a change to the
encoder or to the renderer makes new keys, never a reuse of stale entries.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.magvit import checkpoint_sha256


def code_digest(*modules: str) -> str:
    """sha256 over the source of ``modules`` (a package means all its .py files), in a fixed
    order; the short hex a cache key carries."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(name)
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" \
            else [origin]
        for path in files:
            digest.update(f"{name}:{path.relative_to(origin.parent)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_state(folder: Path) -> dict[str, Any]:
    """The commit checked out in ``folder`` and whether tracked or untracked files differ
    from it (ignored files, like run outputs, do not count); None for each outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit is not None else None
    return {"commit": commit.strip() if commit else None,
            "dirty": bool(status.strip()) if status is not None else None}


def checkpoint_record(sources: dict[str, str | None]) -> dict[str, dict[str, str]]:
    """Per named checkpoint that was given: its source as given and the sha256 of its bytes."""
    return {name: {"source": os.fspath(source), "sha256": checkpoint_sha256(source)}
            for name, source in sources.items() if source}


def library_versions() -> dict[str, str | None]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"numpy": np.__version__, "cudnn": str(cudnn) if cudnn is not None else None}
