"""`orch clean`: remove worktrees, never uncommitted work unless --force."""

from __future__ import annotations

from dataclasses import asdict

import typer

VariantsArg = typer.Argument(None, help="Variants to clean (default: every enabled one).")
ForceOpt = typer.Option(False, "--force", help="Remove worktrees even with uncommitted changes.")
BranchesOpt = typer.Option(False, "--delete-branches", help="Also delete the variants' branches.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")


def clean(
    variants: list[str] | None = VariantsArg,
    force: bool = ForceOpt,
    delete_branches: bool = BranchesOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove the variants' worktrees (never uncommitted work, unless --force).

    Branches stay unless --delete-branches; run outputs in .orch/runs stay.
    """
    from orchestrator import ui, worktrees
    from orchestrator.cli import setup

    cfg, _ = setup()
    chosen = cfg.select(variants) if variants else cfg.variants
    results = worktrees.clean(cfg, chosen, force=force, delete_branches=delete_branches)
    if as_json:
        ui.write_json([asdict(r) for r in results])
    else:
        rows = [
            (r.variant, r.action, "deleted" if r.branch_deleted else "kept", r.detail)
            for r in results
        ]
        ui.write(ui.table(["variant", "worktree", "branch", "note"], rows))
    worktrees.refuse_dirty(results)
