"""The orch command line: one thin module per command, assembled in `main`.

A command validates how its options combine, calls one library function, renders what it
returns through `orchestrator.ui`, and exits. Library modules are imported inside the command
bodies so that `orch --help` stays fast.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

    from orchestrator.config import Config
    from orchestrator.devices import Gpu


# `orch --config PATH` for the command being run: set by the app's callback, cleared when
# that invocation ends (so a later one in the same process, as in tests, never sees it).
_CONFIG_OPTION: ContextVar[Path | None] = ContextVar("orch_config_option", default=None)


def keep_config_option(ctx: typer.Context, config: Path | None) -> None:
    """Keep ``config`` (`--config`) for the command of this invocation, until it ends."""
    _CONFIG_OPTION.set(config)
    ctx.call_on_close(lambda: _CONFIG_OPTION.set(None))


def config_option() -> Path | None:
    """`orch --config PATH` when given."""
    return _CONFIG_OPTION.get()


def setup() -> tuple[Config, Path]:
    """The study's config (`--config`, $ORCH_CONFIG or config.yaml) and its state directory."""
    from orchestrator.config import load_config
    from orchestrator.state import state_home

    cfg = load_config(path=config_option())
    return cfg, state_home(cfg.root)


def state_dir() -> Path:
    """The state directory `setup` gives, found without reading the config, so that a run can
    be watched and compared while the config is being edited: $ORCH_HOME, else
    <repo root>/.orch."""
    import os

    from orchestrator.config import CONFIG_ENV, locate
    from orchestrator.state import HOME_ENV, state_home

    given = config_option()
    if given is None and not os.environ.get(CONFIG_ENV) and os.environ.get(HOME_ENV):
        return state_home()  # no repo needed, e.g. to compare a run copied elsewhere
    root, _ = locate(given)
    return state_home(root)


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
