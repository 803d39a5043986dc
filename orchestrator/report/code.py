"""The code difference between two commits (or two folders at two commits), from git.

One ``git diff --numstat --patch -z`` gives both the per-file counts and the patch. Nothing
here raises for git's sake: a missing git, a folder outside any repository or a commit that
is not there becomes the ``error`` of an empty ``CodeDiff``, so a report still builds.
Several repositories may be tried in turn (a job's worktree, the run folder's repository,
the current one); a commit names its content, so the first that has both is the right one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FileChange:
    path: str  # "old -> new" for a rename
    added: int | None  # None: a binary file
    removed: int | None


@dataclass(frozen=True)
class CodeDiff:
    """``old`` against ``new``: what changed going from A's code to B's."""

    old: str  # the commit (or commit:folder) asked for
    new: str
    old_commit: str  # the full commit it resolved to ("" when it did not)
    new_commit: str
    files: tuple[FileChange, ...] = ()
    patch: str = ""
    truncated: bool = False  # the patch was cut at the caller's limit
    error: str = ""  # why there is no diff

    @property
    def added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def removed(self) -> int:
        return sum(f.removed or 0 for f in self.files)

    @property
    def same(self) -> bool:
        """Both sides are the same code: no error, nothing changed."""
        return not self.error and not self.files

    def stat(self) -> str:
        """"3 files, +10 -2", or why there is nothing to count."""
        if self.error:
            return f"no code diff: {self.error}"
        if not self.files:
            return "no difference"
        n = len(self.files)
        return f"{n} file{'s' if n != 1 else ''}, +{self.added} -{self.removed}"


class _GitFailed(Exception):
    pass


def _git(args: list[str], cwd: Path) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False,
                              timeout=GIT_TIMEOUT_S)
    except FileNotFoundError:
        raise _GitFailed("git is not installed or not on PATH") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise _GitFailed(f"git {args[0]} in {cwd}: {error}") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise _GitFailed(lines[0].removeprefix("fatal: ") if lines else
                         f"git {args[0]} exited {proc.returncode}")
    # A patch may hold any bytes (a file in another encoding): never fail on decoding.
    return proc.stdout.decode("utf-8", errors="replace")


def _resolve(repo: Path, revisions: Sequence[str]) -> list[str]:
    """The object names ``revisions`` resolve to in ``repo`` (a commit, or with a ``:`` a
    folder's tree); _GitFailed naming the first one that is not there."""
    names = []
    for revision in revisions:
        spec = revision if ":" in revision else f"{revision}^{{commit}}"
        try:
            names.append(_git(["rev-parse", "--verify", "--quiet", "--end-of-options", spec],
                              repo).strip())
        except _GitFailed as error:
            if "not a git repository" in str(error) or "git is not" in str(error):
                raise
            raise _GitFailed(f"{revision} is not in the repository at {repo}") from None
    return names


def parse_numstat_patch(text: str) -> tuple[list[FileChange], str]:
    """``git diff --numstat --patch -z`` output: the per-file counts, then the patch."""
    files: list[FileChange] = []
    pos = 0
    while pos < len(text):
        end = text.find("\0", pos)
        if end < 0:
            break
        head, pos = text[pos:end], end + 1
        if not head:  # the empty record between the counts and the patch
            break
        added, removed, path = (head.split("\t", 2) + ["", ""])[:3]
        if not path:  # a rename: the old and the new path follow as records of their own
            old_end = text.find("\0", pos)
            new_end = text.find("\0", old_end + 1)
            if old_end < 0 or new_end < 0:
                break
            path = f"{text[pos:old_end]} -> {text[old_end + 1:new_end]}"
            pos = new_end + 1
        files.append(FileChange(path, int(added) if added.isdigit() else None,
                                int(removed) if removed.isdigit() else None))
    return files, text[pos:]


def code_diff(repos: Sequence[Path], old: str, new: str, *,
              max_chars: int | None = None) -> CodeDiff:
    """How ``new`` differs from ``old`` (commits, branches, or ``commit:folder`` trees), in
    the first of ``repos`` that has both; the patch cut at ``max_chars`` when given."""
    errors = []
    for repo in dict.fromkeys(repos):
        if not repo.is_dir():
            continue
        try:
            old_name, new_name = _resolve(repo, [old, new])
            out = _git(["-c", "core.quotePath=false", "diff", "--numstat", "--patch", "-z",
                        "--no-color", "--no-ext-diff", "--find-renames", old_name, new_name],
                       repo)
        except _GitFailed as error:
            errors.append(str(error))
            if "git is not installed" in str(error):
                break
            continue
        files, patch = parse_numstat_patch(out)
        truncated = max_chars is not None and len(patch) > max_chars
        if truncated:
            patch = patch[:max_chars]
        commit_of = {old: old_name, new: new_name}
        return CodeDiff(old, new, commit_of[old] if ":" not in old else old,
                        commit_of[new] if ":" not in new else new, tuple(files), patch,
                        truncated)
    # The most telling reason: a missing commit says more than "not a git repository".
    errors.sort(key=lambda e: "not a git repository" in e)
    return CodeDiff(old, new, "", "", error=errors[0] if errors else "no repository to look in")


def patch_lines(patch: str) -> list[tuple[str, str]]:
    """Each line of a unified diff with its kind: "meta" (a file's header), "hunk", "add",
    "del" or "" (context). A removed line that reads "-- x" is still a removal: headers are
    only what comes between a "diff" line and the first hunk."""
    out = []
    in_header = False
    for line in patch.splitlines():
        if line.startswith("diff "):
            in_header = True
            kind = "meta"
        elif line.startswith("@@"):
            in_header = False
            kind = "hunk"
        elif in_header:
            kind = "meta"
        else:
            kind = {"+": "add", "-": "del"}.get(line[:1], "")
        out.append((kind, line))
    return out
