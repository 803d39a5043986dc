"""`orch spawn`: a branch and a worktree per variant."""

from __future__ import annotations

from dataclasses import asdict

import typer

VariantsArg = typer.Argument(None, help="Variants to spawn (default: every enabled one).")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")


def spawn(variants: list[str] | None = VariantsArg, as_json: bool = JsonOpt) -> None:
    """Create each variant's branch (from base_ref, if missing) and its worktree.

    Idempotent: a healthy worktree is left alone, a stale one (folder deleted by hand) is
    pruned and recreated. Never touches uncommitted work.
    """
    from orchestrator import ui, worktrees
    from orchestrator.cli import setup

    cfg, _ = setup()
    results = worktrees.spawn(cfg, cfg.select(variants))
    if as_json:
        ui.write_json([asdict(r) for r in results])
        return
    rows = [
        (r.variant, r.branch + (" (new)" if r.branch_created else ""), r.action, r.worktree)
        for r in results
    ]
    ui.write(ui.table(["variant", "branch", "worktree", "path"], rows))
