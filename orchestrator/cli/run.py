"""`orch run`: the main job, from worktrees to the comparison report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.options import (
    AddressOpt,
    BackendOpt,
    DryRunOpt,
    LiveOpt,
    PlanGpusOpt,
    PresetOpt,
    RehearseOpt,
    RunJsonOpt,
    SeedsOpt,
    SetOpt,
)

if TYPE_CHECKING:
    from orchestrator.config import Config, Variant


def run(
    preset: str | None = PresetOpt,
    seeds: str = SeedsOpt,
    set_: list[str] | None = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = RunJsonOpt,
    live: bool | None = LiveOpt,
    backend: str = BackendOpt,
    address: str | None = AddressOpt,
    rehearse: bool = RehearseOpt,
    plan_gpus: str | None = PlanGpusOpt,
) -> None:
    """Spawn every enabled variant, run the shared jobs, gate, train and compare.

    Uses default_preset from config.yaml (the CPU-friendly tiny) unless --preset says
    otherwise. Ends with report.md and report.html in the run's folder. With `--backend ray`
    the jobs run on a Ray cluster, as with `orch train`. With `--rehearse` (e.g. `orch run
    --preset full --rehearse`): spawn, then a rehearsal of the preset and its plan. `-s
    KEY=VALUE` overrides the variants' configs as with `orch train`; `--dry-run` prints the
    plan and runs nothing.
    """
    from orchestrator import launcher, rehearsal, ui
    from orchestrator.cli import parse_plan_gpus, parse_seeds, parse_set, setup
    from orchestrator.errors import UsageError
    from orchestrator.executors import open_executor
    from orchestrator.failures import outcome_error
    from orchestrator.monitor import LiveView
    from orchestrator.state import run_to_dict

    cfg, home = setup()
    variants, preset_name = cfg.select(None), cfg.preset(preset)
    seed_choice, overrides = parse_seeds(seeds), parse_set(set_)
    if plan_gpus is not None and not rehearse:
        raise UsageError("--plan-gpus is for --rehearse")
    if dry_run and rehearse:
        raise UsageError("--dry-run shows a training's plan; a rehearsal is what measures one")
    if dry_run:
        show_dry_run(cfg, home, variants, preset_name, seed_choice, overrides, False,
                     spawn=True, backend=backend, address=address, as_json=as_json)
        return
    plan, report = None, None
    with open_executor(cfg, backend, address) as executor, LiveView(ui.err, live=live) as view:
        if rehearse:
            run_state, plan = rehearsal.rehearse(
                cfg, home, variants, preset_name, plan_gpus=parse_plan_gpus(plan_gpus),
                spawn=True, on_update=view.update, executor=executor)
        else:
            run_state, report = launcher.run_all(
                cfg, home, variants, preset=preset_name, seeds=seed_choice,
                on_update=view.update, executor=executor, overrides=overrides)
    if as_json:
        ui.write_json(run_to_dict(run_state) | ({"plan": plan.to_dict()} if plan else {})
                      | ({"report": str(report)} if report else {}))
    else:
        ui.write(ui.jobs_table(run_state))
        if plan is not None:
            ui.write(ui.plan_table(plan))
        if report is not None:
            ui.write(f"report: {report}")
    err = outcome_error(run_state)
    if err is not None:
        raise err


def show_dry_run(cfg: Config, home: Path, variants: list[Variant], preset: str,
                 seeds: int | list[int], overrides: dict[str, str], resume: bool, *,
                 spawn: bool, backend: str, address: str | None, as_json: bool) -> None:
    """`--dry-run` of `orch run` (``spawn``) or `orch train`: print the plan, start nothing."""
    from dataclasses import asdict

    from orchestrator import ui
    from orchestrator.dryrun import dry_run
    from orchestrator.executors import open_executor

    with open_executor(cfg, backend, address) as executor:
        plan = dry_run(cfg, home, variants, preset, seeds=seeds, resume=resume, spawn=spawn,
                       overrides=overrides, executor=executor)
    if as_json:
        ui.write_json(asdict(plan))
    else:
        ui.write(ui.dry_run_view(plan))
