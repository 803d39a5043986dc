"""The `orch` app: registers one command per module and maps OrchError to exit codes."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, OrchError

app = typer.Typer(
    name="orch",
    help="Run experiment variants side by side in git worktrees: gated by tests, trained in "
    "parallel, watched live, compared honestly.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"orch {version('orch')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("orch (not installed: run `pip install -e .` in its repository)")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print orch's version.",
    )] = False,
    config: Annotated[Path | None, typer.Option(
        "--config", metavar="PATH", show_default=False,
        help="orch's config file, for a repo whose own config.yaml is something else "
        "(default: $ORCH_CONFIG, else config.yaml at the repo root). The repo root is the git "
        "repository holding that file, else the one holding the current folder; folders and "
        "gates in the config are relative to that root, files it names to the config file.",
    )] = None,
) -> None:
    from orchestrator.cli import keep_config_option

    keep_config_option(ctx, config)  # commands read it back through `orchestrator.cli.setup`


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """One red line and the category's exit code for an OrchError; a hint for a bug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from orchestrator import ui

        ui.show_library_warnings()
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


# (command name, module under orchestrator.cli, function in it)
COMMANDS = [
    ("init", "init", "init"),
    ("spawn", "spawn", "spawn"),
    ("test-all", "test_all", "run_gates"),
    ("train", "train", "train"),
    ("run", "run", "run"),
    ("monitor", "monitor", "monitor"),
    ("logs", "logs", "logs"),
    ("stop", "stop", "stop"),
    ("status", "status", "status"),
    ("compare", "compare", "compare"),
    ("diff", "diff", "diff"),
    ("export", "export", "export"),
    ("clean", "clean", "clean"),
]

for _name, _module, _function in COMMANDS:
    _command = getattr(importlib.import_module(f"orchestrator.cli.{_module}"), _function)
    app.command(_name)(handle_errors(_command))


if __name__ == "__main__":
    app()
