"""`--dry-run`: what `orch train` or `orch run` would do, without doing it.

The plan is made by the launcher's own parts: the shared jobs' cache keys
(`shared_jobs.plan`), the queue with each job's request from the rehearsal's plan or the
config (`Driver._queue`), the scheduler's first placements, and the train command
(`jobenv.train_argv`). Nothing is written: no run state, no worktree, no lock. Jobs the
scheduler would not start at once are shown waiting, with the command their share of the
cores would give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import shared_jobs
from orchestrator.config import Config, Variant
from orchestrator.devices import cpu_cores
from orchestrator.executors import Executor, LocalExecutor
from orchestrator.jobenv import train_argv
from orchestrator.plan import load_plan
from orchestrator.resume import unfinished_jobs
from orchestrator.scheduler import Scheduler
from orchestrator.state import JobState, Stage, new_jobs, run_dir

CHECKPOINT = Path("checkpoints") / "last.pt"


@dataclass(frozen=True)
class SharedStep:
    name: str
    cached: bool
    artifact: str  # where its artifact is (cached) or will be


@dataclass(frozen=True)
class JobStep:
    name: str
    variant: str
    seed: int
    worktree: str
    worktree_ready: bool  # False: `orch spawn` (or `orch run`) must create it first
    device: str  # "cpu", "cuda:0", or "waits" (no slot until an earlier job ends)
    threads: int
    memory_mb: float  # GPU memory reserved for it (0 on the CPU)
    memory_basis: str  # plan (a rehearsal measured it) or config (an estimate)
    micro_batch: int | None
    resume: str  # "" (a fresh start), or what --resume would continue from
    command: list[str]


@dataclass(frozen=True)
class DryRun:
    command: str  # train or run
    preset: str
    run_id: str  # the run that --resume continues; "" for a new run
    shared: list[SharedStep] = field(default_factory=list)
    gates: list[str] = field(default_factory=list)  # variants whose gate would run
    jobs: list[JobStep] = field(default_factory=list)
    plan: str = ""  # the rehearsal plan the memory comes from ("" when none)


def dry_run(cfg: Config, home: Path, variants: list[Variant], preset: str, *,
            seeds: int | list[int] = 1, resume: bool = False, spawn: bool = False,
            overrides: dict[str, str] | None = None,
            executor: Executor | None = None) -> DryRun:
    """The plan of `orch train` (``spawn``: `orch run`) for ``variants`` at ``preset``."""
    from orchestrator.launcher import Driver  # the driver's own queueing, not a copy of it

    driver = Driver(cfg, home, executor=executor or LocalExecutor())
    jobs, run_id = _jobs(cfg, home, variants, preset, seeds, resume, overrides)
    if run_id:
        preset = jobs[0].preset if jobs else preset
    gpus = driver._gpus()
    plan = load_plan(home, preset, "cuda" if gpus else "cpu")
    driver.plan = plan
    shared = [p for p in shared_jobs.plan(cfg, home, preset)
              if any(p.job.serves(j.variant) for j in jobs)]
    shared_args = {j.variant: [a for p in shared if p.job.serves(j.variant)
                               for a in p.train_args] for j in jobs}
    sched: Scheduler[str] = Scheduler(gpus, driver._cores() or cpu_cores())
    for j in jobs:
        driver._queue(sched, j)
    sched.plan_threads()
    placed = dict(sched.ready())
    steps = []
    for j in jobs:
        v = next(x for x in cfg.variants if x.name == j.variant)
        a = placed.get(j.name)
        device = a.device if a is not None else ("failed" if j.stage == Stage.failed else
                                                 "waits")
        threads = a.threads if a is not None else sched.default_threads
        continues = _resume_point(j) if resume else ""
        argv = train_argv(cfg, j, v, threads=threads,
                          device=a.device if a is not None else "cpu",
                          shared_args=shared_args[j.variant], resume=bool(continues))
        worktree = cfg.worktree_path(v)
        steps.append(JobStep(
            name=j.name, variant=j.variant, seed=j.seed, worktree=str(worktree),
            worktree_ready=worktree.is_dir(), device=device if j.reason == "" else
            f"cannot run: {j.reason}", threads=threads,
            memory_mb=a.memory_mb if a is not None else j.memory_mb,
            memory_basis=j.memory_basis, micro_batch=j.micro_batch, resume=continues,
            command=argv))
    gates = sorted({j.variant for j in jobs if not (j.gate is not None and j.gate.passed)})
    return DryRun(
        command="run" if spawn else "train", preset=preset, run_id=run_id,
        shared=[SharedStep(p.job.name, p.cached, str(p.artifact)) for p in shared],
        gates=gates, jobs=steps,
        plan=f"{plan.preset}, measured on {plan.measured_on}" if plan is not None else "")


def _jobs(cfg: Config, home: Path, variants: list[Variant], preset: str,
          seeds: int | list[int], resume: bool, overrides: dict[str, str] | None,
          ) -> tuple[list[JobState], str]:
    """The jobs a run would hold: new ones, or the unfinished ones of the run --resume
    continues (read only: nothing of that run is touched)."""
    if resume:
        old, todo = unfinished_jobs(home, variants)
        return todo, old.run_id
    return new_jobs(cfg, run_dir(home, "<new run>"), variants, preset, seeds,
                    overrides=overrides), ""


def _resume_point(j: JobState) -> str:
    checkpoint = Path(j.output_dir) / CHECKPOINT
    return (f"from {checkpoint}" if checkpoint.exists() else
            "from the start (no checkpoint)")
