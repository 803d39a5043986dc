"""A rehearsal: every job of a preset for a step or two at its true shapes, measured.

`orch train --rehearse` (and `orch run --rehearse`) runs the preset's shared jobs with their
rehearse_args, the preset's stand-in maker (random weights in the official layouts of its
downloads, in a private hub cache of the run's own: the user's cache is never touched), the
gates as usual, then each training job alone (so its peak memory is its own) with
``--rehearse``: one job per variant, which measures a step at each of micro-batch sizes 1
and 2 itself. Each writes rehearsal.json; from those the plan (``orchestrator.plan``) picks
micro-batches and GPUs and is written as plan.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator import worktrees as wt
from orchestrator.config import Config, Variant
from orchestrator.devices import Gpu
from orchestrator.errors import JobFailed
from orchestrator.executors import Executor, LocalExecutor
from orchestrator.formats import CorruptFile, warn_corrupt
from orchestrator.jobenv import StandIns
from orchestrator.launcher import Driver, OnUpdate
from orchestrator.lock import run_lock
from orchestrator.plan import REHEARSAL_FILE, Measurement, Plan, build_plan, write_plan
from orchestrator.shared_jobs import REHEARSAL_ASSETS
from orchestrator.state import RunState, Stage, run_dir


def rehearse(
    cfg: Config,
    home: Path,
    variants: list[Variant],
    preset: str,
    *,
    plan_gpus: list[Gpu] | None = None,
    spawn: bool = False,
    on_update: OnUpdate | None = None,
    executor: Executor | None = None,
) -> tuple[RunState, Plan | None]:
    """Rehearse ``preset`` and plan it for ``plan_gpus`` (default: this machine's GPUs)."""
    with run_lock(home):
        d = Driver(cfg, home, on_update, executor=executor or LocalExecutor(),
                   one_at_a_time=True)
        if spawn:
            wt.spawn(cfg, variants)
        for v in variants:
            wt.require_worktree(cfg, v)
        d.new_run("rehearse", preset, variants, 1, Stage.spawned if spawn else Stage.pending)
        with d.guarded():
            shared_args = d.shared(preset)
            d.stand_ins = stand_ins(d.run)
            d.gate([j for j in d.run.jobs if j.stage in (Stage.pending, Stage.spawned)],
                   Stage.queued)
            d.train([j for j in d.run.jobs if j.stage == Stage.queued], shared_args, False)
            d.finish()
        plan = None
        measured = measurements(d.run)
        if measured:
            plan = build_plan(preset, measured, d._gpus() if plan_gpus is None else plan_gpus)
            path = write_plan(plan, run_dir(home, d.run.run_id), home)
            d.run.artifacts["plan"] = str(path)
            d.save(now=True)
        return d.run, plan


def stand_ins(run: RunState) -> StandIns:
    """The stand-ins the rehearsal assets job wrote (none when the preset has no maker)."""
    assets = run.artifacts.get(REHEARSAL_ASSETS)
    if not assets:
        return StandIns()
    path = Path(assets)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        env, inputs = dict(raw.get("env", {})), dict(raw.get("inputs", {}))
    except (OSError, ValueError, AttributeError) as error:
        raise JobFailed(f"rehearsal assets {path} are unreadable ({error}); delete that "
                        "folder and rehearse again") from None
    # The maker wrote into a work folder published under another name: resolve its paths
    # relative to where its assets.json is now.
    return StandIns(env={k: _relocated(str(v), path.parent) for k, v in env.items()},
                    inputs={k: _relocated(str(v), path.parent) for k, v in inputs.items()})


def _relocated(value: str, folder: Path) -> str:
    candidate = Path(value)
    if not candidate.is_absolute():
        return str(folder / candidate) if (folder / candidate).exists() else value
    for parent in candidate.parents:  # .../<name>.partial-<pid>/x -> <folder>/x
        if ".partial-" in parent.name and parent.name.startswith(folder.name):
            return str(folder / candidate.relative_to(parent))
    return value


def measurements(run: RunState) -> dict[str, Measurement]:
    """Per variant, the rehearsal.json of its job, if that finished. One that cannot be read
    (a train entry point of an older format, a torn file) leaves its variant out of the plan,
    with a warning."""
    out: dict[str, Measurement] = {}
    for job in run.jobs:
        if job.stage != Stage.done:
            continue
        try:
            out[job.variant] = Measurement.read(Path(job.output_dir) / REHEARSAL_FILE)
        except CorruptFile as error:
            warn_corrupt(error.path, error.reason, f"{job.variant} is left out of the plan")
    return out
