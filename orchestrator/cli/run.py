"""`orch run`: the main job, from worktrees to the comparison report."""

from __future__ import annotations

from orchestrator.cli.options import (
    AddressOpt,
    BackendOpt,
    LiveOpt,
    PlanGpusOpt,
    PresetOpt,
    RehearseOpt,
    SeedsOpt,
)


def run(
    preset: str | None = PresetOpt,
    seeds: int = SeedsOpt,
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
    --preset full --rehearse`): spawn, then a rehearsal of the preset and its plan.
    """
    from orchestrator import launcher, rehearsal, ui
    from orchestrator.cli import parse_plan_gpus, setup
    from orchestrator.errors import UsageError
    from orchestrator.executors import open_executor
    from orchestrator.failures import outcome_error
    from orchestrator.monitor import LiveView

    cfg, home = setup()
    variants, preset_name = cfg.select(None), cfg.preset(preset)
    if plan_gpus is not None and not rehearse:
        raise UsageError("--plan-gpus is for --rehearse")
    plan, report = None, None
    with open_executor(cfg, backend, address) as executor, LiveView(ui.err, live=live) as view:
        if rehearse:
            run_state, plan = rehearsal.rehearse(
                cfg, home, variants, preset_name, plan_gpus=parse_plan_gpus(plan_gpus),
                spawn=True, on_update=view.update, executor=executor)
        else:
            run_state, report = launcher.run_all(
                cfg, home, variants, preset=preset_name, seeds=seeds, on_update=view.update,
                executor=executor)
    ui.write(ui.jobs_table(run_state))
    if plan is not None:
        ui.write(ui.plan_table(plan))
    if report is not None:
        ui.write(f"report: {report}")
    err = outcome_error(run_state)
    if err is not None:
        raise err
