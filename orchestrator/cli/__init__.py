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
    from orchestrator.devices import Gpu


def setup() -> tuple[Config, Path]:
    """The study's config and its state directory."""
    from orchestrator.config import load_config
    from orchestrator.state import state_home

    cfg = load_config()
    return cfg, state_home(cfg.root)


def parse_plan_gpus(text: str | None) -> list[Gpu] | None:
    """`--plan-gpus 0:81920,1:24576` as GPUs; None when not given."""
    from orchestrator.devices import parse_gpus_env
    from orchestrator.errors import UsageError

    if text is None:
        return None
    try:
        return parse_gpus_env(text)
    except (ValueError, IndexError):
        raise UsageError(f"--plan-gpus {text!r}: write index:MiB pairs, e.g. 0:81920,1:24576"
                         ) from None
