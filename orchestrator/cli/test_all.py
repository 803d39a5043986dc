"""`orch test-all`: every variant's gate, at once, each in its own worktree."""

from __future__ import annotations

import typer

from orchestrator.cli.options import LiveOpt

VariantsArg = typer.Argument(None, help="Variants to test (default: every enabled one).")
JsonOpt = typer.Option(False, "--json", help="Print the run state as JSON.")


def run_gates(
    variants: list[str] | None = VariantsArg, as_json: bool = JsonOpt, live: bool | None = LiveOpt
) -> None:
    """Run each variant's gate (its pytest folder) in its worktree, all at once.

    Per-test outcomes come from pytest's junit XML and are kept in the run state, for
    `orch status` and the report. Exits 4 if any gate fails.
    """
    from orchestrator import launcher, ui
    from orchestrator.cli import setup
    from orchestrator.failures import outcome_error
    from orchestrator.monitor import LiveView
    from orchestrator.state import run_to_dict

    cfg, home = setup()
    with LiveView(ui.err, live=live) as view:
        run = launcher.test_all(cfg, home, cfg.select(variants), on_update=view.update)
    if as_json:
        ui.write_json(run_to_dict(run))
    else:
        ui.write(ui.gate_table(run))
    err = outcome_error(run)
    if err is not None:
        raise err
