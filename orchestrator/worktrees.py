"""One branch and one git worktree per variant: create, inspect, snapshot, remove.

Rules: an existing healthy worktree is left alone; a worktree whose folder was deleted by
hand is pruned and recreated; anything else in the way is an error that says what to do.
Nothing here ever resets, checks out or stashes inside a worktree, so uncommitted work is
never touched.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, Variant
from orchestrator.errors import DirtyWorktreeError, GitError, WorktreeError


def git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run git and return its stdout; a failure becomes a GitError with git's own message."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
        )
    except FileNotFoundError:
        raise GitError("git is not installed or not on PATH") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        msg = lines[-1] if lines else f"exit {proc.returncode}"
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {msg}")
    return proc.stdout


@dataclass(frozen=True)
class WorktreeEntry:
    path: Path
    head: str
    branch: str | None  # short name, None when detached
    prunable: bool


@dataclass(frozen=True)
class SpawnResult:
    variant: str
    branch: str
    worktree: str
    action: str  # "created", "exists" or "recreated"
    branch_created: bool


@dataclass(frozen=True)
class CleanResult:
    variant: str
    worktree: str
    action: str  # "removed", "absent", "refused" (dirty)
    branch_deleted: bool
    detail: str = ""


UNTRACKED_MARK = "\n# untracked files (not in the diff above):\n"


@dataclass(frozen=True)
class Snapshot:
    """What a job runs: the worktree's commit, and its uncommitted changes if any."""

    commit: str
    dirty: bool
    diff: str


def list_worktrees(root: Path) -> list[WorktreeEntry]:
    out = git(["worktree", "list", "--porcelain"], root)
    entries: list[WorktreeEntry] = []
    for block in out.strip().split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        branch = fields.get("branch")
        if branch and branch.startswith("refs/heads/"):
            branch = branch[len("refs/heads/") :]
        entries.append(
            WorktreeEntry(
                path=Path(fields.get("worktree", "")),
                head=fields.get("HEAD", ""),
                branch=branch,
                prunable="prunable" in fields or not Path(fields.get("worktree", "")).exists(),
            )
        )
    return entries


def branch_exists(root: Path, branch: str) -> bool:
    try:
        git(["show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], root)
    except GitError:
        return False
    return True


def ensure_ignored(cfg: Config) -> None:
    """Keep the worktree root out of `git status` via .git/info/exclude (never .gitignore)."""
    wt = cfg.worktree_dir.resolve()
    try:
        rel = wt.relative_to(cfg.root.resolve())
    except ValueError:
        return  # outside the repo: nothing to ignore
    common = Path(git(["rev-parse", "--git-common-dir"], cfg.root).strip())
    if not common.is_absolute():
        common = cfg.root / common
    exclude = common / "info" / "exclude"
    pattern = f"/{rel.parts[0]}/"
    existing = exclude.read_text().splitlines() if exclude.exists() else []
    if pattern not in existing:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as f:
            f.write(f"\n# orch state and worktrees\n{pattern}\n")


def spawn(cfg: Config, variants: list[Variant]) -> list[SpawnResult]:
    """A branch (from base_ref, if missing) and a worktree for each variant."""
    root = cfg.root
    git(["rev-parse", "--git-dir"], root)
    ensure_ignored(cfg)
    results = []
    for v in variants:
        results.append(_spawn_one(cfg, v))
    return results


def _spawn_one(cfg: Config, v: Variant) -> SpawnResult:
    root = cfg.root
    path = cfg.worktree_path(v).resolve()
    branch_created = False
    if not branch_exists(root, v.branch):
        try:
            git(["rev-parse", "--verify", "--quiet", f"{cfg.base_ref}^{{commit}}"], root)
        except GitError:
            raise GitError(
                f"base_ref {cfg.base_ref!r} is not a commit in this repo; fix base_ref in "
                f"{cfg.path.name} or commit something first"
            ) from None
        git(["branch", v.branch, cfg.base_ref], root)
        branch_created = True

    stale = False
    for e in list_worktrees(root):
        same_path = e.path.resolve() == path
        if same_path:
            if e.prunable:
                stale = True
                continue
            if e.branch != v.branch:
                raise WorktreeError(
                    f"{path} is a worktree of {e.branch or 'a detached HEAD'}, not {v.branch}; "
                    f"run `orch clean {v.name}` or move it"
                )
            return SpawnResult(v.name, v.branch, str(path), "exists", branch_created)
        if e.branch == v.branch:
            if e.prunable:
                stale = True
                continue
            raise WorktreeError(
                f"branch {v.branch} is already checked out at {e.path}; switch that checkout "
                f"to another branch (or remove that worktree), then run `orch spawn {v.name}`"
            )
    if stale:
        git(["worktree", "prune"], root)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise WorktreeError(
            f"{path} is in the way (it exists and is not a worktree of {v.branch}); "
            "move it away, then run orch spawn again"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    git(["worktree", "add", str(path), v.branch], root)
    return SpawnResult(v.name, v.branch, str(path), "recreated" if stale else "created",
                       branch_created)


def healthy(cfg: Config, v: Variant) -> bool:
    path = cfg.worktree_path(v).resolve()
    return any(
        e.path.resolve() == path and not e.prunable and e.branch == v.branch
        for e in list_worktrees(cfg.root)
    )


def require_worktree(cfg: Config, v: Variant) -> Path:
    path = cfg.worktree_path(v)
    if not healthy(cfg, v):
        raise WorktreeError(f"no worktree for {v.name} at {path}; run `orch spawn {v.name}`")
    return path


def status_lines(worktree: Path) -> list[str]:
    """`git status --porcelain` lines: modified, staged and untracked (not ignored) files."""
    return [ln for ln in git(["status", "--porcelain"], worktree).splitlines() if ln.strip()]


def snapshot(worktree: Path) -> Snapshot:
    """The worktree's commit and uncommitted changes: one `git status` when it is clean (the
    common case, once per job), and the diff only when it is not."""
    commit, changes = "", []
    for line in git(["status", "--porcelain=v2", "--branch"], worktree).splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split()[2]
        elif line.strip() and not line.startswith("#"):
            changes.append(line)
    if not commit or commit == "(initial)":
        raise GitError(f"{worktree} has no commit yet; commit the variant's code first")
    diff = ""
    if changes:
        diff = git(["diff", "HEAD", "--binary"], worktree)
        untracked = [ln[2:] for ln in changes if ln.startswith("? ")]
        if untracked:
            diff += UNTRACKED_MARK + "".join(f"#   {u}\n" for u in untracked)
    return Snapshot(commit=commit, dirty=bool(changes), diff=diff)


def clean(
    cfg: Config, variants: list[Variant], force: bool = False, delete_branches: bool = False
) -> list[CleanResult]:
    """Remove the variants' worktrees; a dirty one is refused unless force."""
    root = cfg.root
    entries = {e.path.resolve(): e for e in list_worktrees(root)}
    results = []
    for v in variants:
        path = cfg.worktree_path(v).resolve()
        entry = entries.get(path)
        action = "absent"
        detail = ""
        if entry is not None and not entry.prunable:
            changes = status_lines(path)
            if changes and not force:
                results.append(
                    CleanResult(v.name, str(path), "refused", False,
                                f"{len(changes)} uncommitted change(s)")
                )
                continue
            git(["worktree", "remove", *(["--force"] if force else []), str(path)], root)
            action = "removed"
        elif entry is not None:
            git(["worktree", "prune"], root)
            action = "removed"
        deleted = False
        if delete_branches and branch_exists(root, v.branch):
            try:
                git(["branch", "-D" if force else "-d", v.branch], root)
                deleted = True
            except GitError:
                detail = f"branch {v.branch} kept: not merged (use --force to delete it)"
        results.append(CleanResult(v.name, str(path), action, deleted, detail))
    return results


def refuse_dirty(results: list[CleanResult]) -> None:
    refused = [r for r in results if r.action == "refused"]
    if refused:
        names = " ".join(r.variant for r in refused)
        raise DirtyWorktreeError(
            f"kept {', '.join(f'{r.variant} ({r.detail})' for r in refused)}; commit or "
            f"stash that work, or run `orch clean --force {names}` to drop it"
        )
