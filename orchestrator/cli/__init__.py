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


def optional_config() -> Config | None:
    """The study's config when it is readable, else None: a run compared or diffed away
    from its repository goes by what its results hold."""
    from orchestrator.errors import ConfigError

    try:
        return setup()[0]
    except ConfigError:
        return None


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


def parse_seeds(text: str) -> int | list[int]:
    """`--seeds 3` (a count: seeds 0, 1, 2) or `--seeds 0,3,7` (those seeds; `7,` for one)."""
    from orchestrator.errors import UsageError

    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return count
        seeds = [int(part) for part in text.split(",") if part.strip()]
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise ValueError
        return seeds
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give a count (3: seeds 0, 1, 2) or distinct "
                         "non-negative seeds (0,3,7; one seed as 7,)") from None


def parse_set(texts: list[str] | None) -> dict[str, str]:
    """`-s study.train.lr=3e-4 -s ...` as dotted key -> the text typed (the variant's train
    entry point types it against its config and rejects a key the config lacks)."""
    from orchestrator.errors import UsageError
    from orchestrator.overrides import OverrideError, parse_overrides

    try:
        return parse_overrides(texts or [])
    except OverrideError as e:
        raise UsageError(str(e)) from None


def complete_variants(incomplete: str) -> list[str]:
    """Shell completion of variant names from the config; nothing when it cannot be read
    (completion must never print an error into the user's prompt)."""
    try:
        from orchestrator.config import load_config

        names = [v.name for v in load_config(path=config_option()).variants]
    except Exception:  # noqa: BLE001 - any failure means: no suggestions
        return []
    return [name for name in names if name.startswith(incomplete)]
