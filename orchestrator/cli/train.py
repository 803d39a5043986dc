"""`orch train`: shared jobs, gates, then parallel training jobs on the device slots."""

from __future__ import annotations

import typer

from orchestrator.cli import complete_variants
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

VariantsArg = typer.Argument(None, help="Variants to train (default: every enabled one).",
                             autocompletion=complete_variants, show_default=False)
ResumeOpt = typer.Option(False, "--resume", help="Continue the unfinished jobs of the last run.")


def train(
    variants: list[str] | None = VariantsArg,
    preset: str | None = PresetOpt,
    seeds: str = SeedsOpt,
    resume: bool = ResumeOpt,
    set_: list[str] | None = SetOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = RunJsonOpt,
    live: bool | None = LiveOpt,
    backend: str = BackendOpt,
    address: str | None = AddressOpt,
    rehearse: bool = RehearseOpt,
    plan_gpus: str | None = PlanGpusOpt,
) -> None:
    """Run the shared jobs, gate each variant, then train those that passed, in parallel.

    Shared jobs reuse their cached artifacts. Each job runs in its worktree with that
    worktree first on the import path. A failed job is recorded with its reason and log
    tail while the others go on. Exits 5 if a job failed, 4 if only gates failed. With
    `--backend ray` the jobs run on a Ray cluster from the recorded commit and diff; logs,
    events and outputs come back here. With `--rehearse`, a rehearsal and its plan instead;
    later trainings of that preset on the same kind of device follow the plan. `-s
    study.train.lr=3e-4` overrides a field of every trained variant's config (recorded in
    state.json and each results.json); `--dry-run` prints the plan and runs nothing.
    """
    from orchestrator import launcher, rehearsal, ui
    from orchestrator.cli import parse_plan_gpus, parse_seeds, parse_set, setup
    from orchestrator.errors import UsageError
    from orchestrator.executors import open_executor
    from orchestrator.failures import outcome_error
    from orchestrator.monitor import LiveView
    from orchestrator.state import run_to_dict

    cfg, home = setup()
    seed_choice, overrides = parse_seeds(seeds), parse_set(set_)
    if resume and (preset is not None or seeds != "1" or rehearse or overrides):
        raise UsageError("--resume continues the last run as it was; drop --preset/--seeds/"
                         "--set/--rehearse")
    if plan_gpus is not None and not rehearse:
        raise UsageError("--plan-gpus is for --rehearse")
    if dry_run and rehearse:
        raise UsageError("--dry-run shows a training's plan; a rehearsal is what measures one")
    selected, preset_name = cfg.select(variants), cfg.preset(preset)
    if dry_run:
        from orchestrator.cli.run import show_dry_run

        show_dry_run(cfg, home, selected, preset_name, seed_choice, overrides, resume,
                     spawn=False, backend=backend, address=address, as_json=as_json)
        return
    with open_executor(cfg, backend, address) as executor, LiveView(ui.err, live=live) as view:
        if rehearse:
            run, plan = rehearsal.rehearse(
                cfg, home, selected, preset_name, plan_gpus=parse_plan_gpus(plan_gpus),
                on_update=view.update, executor=executor)
        else:
            run, plan = launcher.train(
                cfg, home, selected, preset=preset_name, seeds=seed_choice, resume=resume,
                on_update=view.update, executor=executor, overrides=overrides), None
    if as_json:
        ui.write_json(run_to_dict(run) | ({"plan": plan.to_dict()} if plan else {}))
    else:
        ui.write(ui.jobs_table(run))
        if plan is not None:
            ui.write(ui.plan_table(plan))
    err = outcome_error(run)
    if err is not None:
        raise err
