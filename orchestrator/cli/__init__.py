"""The orch command line: one thin module per command, assembled in `main`.

A command validates how its options combine, calls one library function, renders what it
returns through `orchestrator.ui`, and exits. Library modules are imported inside the command
bodies so that `orch --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config import Config


def setup() -> tuple[Config, Path]:
    """The study's config and its state directory."""
    from orchestrator.config import load_config
    from orchestrator.state import state_home

    cfg = load_config()
    return cfg, state_home(cfg.root)
