"""The errors orch reports to its user: one base class, one exit code per category.

Each message is one line that says what went wrong and what to do next. The CLI entry point
catches `OrchError`, prints the message in red on stderr and exits with `exit_code`; anything
else is a bug and gets a traceback.
"""

from __future__ import annotations

# Exit codes by category (also printed in `orch --help`).
EXIT_OK = 0
EXIT_USAGE = 2  # bad config or options
EXIT_GIT = 3  # branch, worktree or repository problem
EXIT_GATE = 4  # a variant's gate failed
EXIT_JOB = 5  # a training or shared job failed
EXIT_LOCKED = 6  # another orch run holds the lock
EXIT_NOT_RUNNING = 7  # `orch stop`: the run was not running, nothing was stopped
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 2 config/usage error, 3 git/worktree error, 4 a gate failed, "
    "5 a job failed, 6 another run holds the lock, 7 nothing to stop (`orch stop`), "
    "130 interrupted."
)


class OrchError(Exception):
    """A problem the user can fix; the message says how."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(OrchError):
    exit_code = EXIT_USAGE


class UsageError(OrchError):
    exit_code = EXIT_USAGE


class GitError(OrchError):
    exit_code = EXIT_GIT


class WorktreeError(GitError):
    pass


class DirtyWorktreeError(WorktreeError):
    pass


class GateFailed(OrchError):
    exit_code = EXIT_GATE


class JobFailed(OrchError):
    exit_code = EXIT_JOB


class Locked(OrchError):
    exit_code = EXIT_LOCKED


class Interrupted(OrchError):
    exit_code = EXIT_INTERRUPTED
