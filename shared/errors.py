"""One error family for the shared modules and the variants' entry points.

Each error carries a message that says what to do next and an exit code by category, so an
entry point prints one line and exits with that code instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar


class SharedError(Exception):
    """Base class: bad input or a missing artifact that the user can fix."""

    exit_code = 1


class ConfigError(SharedError, ValueError):
    """A config value or preset name that cannot work."""

    exit_code = 2


class CheckpointError(SharedError):
    """A checkpoint that is missing, unreadable or of the wrong layout."""

    exit_code = 3


class DataError(SharedError, ValueError):
    """A video file or data config that cannot be used."""

    exit_code = 4


class OutOfMemory(SharedError):
    """The device ran out of memory: the same run fits with a smaller ``--micro-batch``."""

    exit_code = 5


T = TypeVar("T")


def fail(error: SharedError) -> NoReturn:
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(error.exit_code)


def run_cli(main: Callable[[], T]) -> T:
    """Run an entry point; a SharedError becomes one line on stderr and its exit code."""
    try:
        return main()
    except SharedError as error:
        fail(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
