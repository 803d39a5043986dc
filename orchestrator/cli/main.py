"""The `orch` app: registers one command per module and maps OrchError to exit codes."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import typer

from orchestrator.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, OrchError

app = typer.Typer(
    name="orch",
    help="Run experiment variants side by side in git worktrees: gated by tests, trained in "
    "parallel, watched live, compared honestly.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """One red line and the category's exit code for an OrchError; a hint for a bug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from orchestrator import ui

        try:
            return func(*args, **kwargs)
        except OrchError as e:
            ui.error(e.message)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            ui.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception:
            ui.error("orch hit a bug (traceback below); please report it with the command used")
            raise

    return wrapper


# (command name, module under orchestrator.cli, function). Modules that are not there yet
# are skipped, so the app works while the others are written.
COMMANDS = [
    ("spawn", "spawn", "spawn"),
    ("test-all", "test_all", "run_gates"),
    ("train", "train", "train"),
    ("run", "run", "run"),
    ("monitor", "monitor", "monitor"),
    ("status", "status", "status"),
    ("compare", "compare", "compare"),
    ("clean", "clean", "clean"),
]


def _register() -> None:
    for name, module, func in COMMANDS:
        try:
            mod = importlib.import_module(f"orchestrator.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name == f"orchestrator.cli.{module}":
                continue
            raise
        fn = getattr(mod, func, None) or getattr(mod, module, None)
        if fn is None:
            continue
        app.command(name)(handle_errors(fn))


_register()


if __name__ == "__main__":
    app()
