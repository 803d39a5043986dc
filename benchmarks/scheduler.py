"""How good is orch's placement? Its makespan against the best schedule, on simulated GPUs.

    python -m benchmarks.scheduler [--plan PATH] [--tflops T] [--steps N] [--mixes N]

Inventories: 1x80 GB, 2x24 GB, 4x80 GB, 8x40 GB (every GPU equally fast). Instances: the
three `full` jobs (one seed, and three seeds as `orch run --seeds 3` queues them), and seeded
random mixes of 3 to 12 jobs (memory 4-80 GB at the whole batch, lengths 1-10 h).

Model of sharing: jobs packed on one GPU must fit its memory together, and share its
compute: k jobs on a GPU each run at 1/k speed, so a GPU's work is conserved (a job's
remaining work falls at rate 1/k while k jobs share its GPU). A job stays on the GPU it
started on. A job's work is its hours alone on one GPU, whatever its micro-batch (the same
FLOPs; a smaller micro-batch's lower utilisation is not modelled).

Three makespans per instance:

- planner: orch's own code, event by event. The jobs go to `orchestrator.scheduler.Scheduler`
  in the launcher's order (variant by variant, seed by seed; a mix in its drawn order), each
  with the plan's request (`Request(1, planned GB, work_s=its hours)`: the largest
  micro-batch that divides the batch and fits the largest GPU with `plan.margin_for`, via
  `plan.choose_micro_batch`; the run time a plan estimates). At every event (start, and each
  job's end, after `release`) `Scheduler.ready()` starts what it admits: with every job's
  work known, longest first onto the GPU free of work soonest, packed beside what runs there
  if it fits, else waiting for it (the scheduler's clock is the simulation's).
- no estimates: the same, without `work_s` (a plan without run times): queue order, an idle
  GPU first, else best fit onto a busy one (`devices.Pool.place`).
- one per GPU: the same Scheduler, each job asking for a whole GPU (what the launcher does
  with `one_at_a_time`), so a GPU runs one job at a time, started in queue order as GPUs
  free up.
- best: exact. Under this model no schedule beats the best assignment of jobs to GPUs run
  back to back: a GPU does at most one hour of work per hour however many jobs share it, so
  a GPU ends no earlier than the sum of the work of the jobs placed on it, and running them
  one after another (which fits, since each fits the GPU alone) reaches that sum. The best
  makespan over all schedules (any order, any packing, any waiting) is therefore the
  smallest over assignments of the largest GPU load, with each job only on GPUs that hold
  it. A branch-and-bound over those assignments finds it (memory sizes fixed as the planner
  fixed them, so the comparison is about placement and order); past a node budget it says
  "n/a (too large)" and prints the lower bound max(total work / GPUs, longest job).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.devices import Gpu, NeverFits, Request  # noqa: E402
from orchestrator.plan import MemoryModel, Plan, choose_micro_batch, margin_for  # noqa: E402
from orchestrator.scheduler import Scheduler  # noqa: E402

GB = 1024  # MB
FULL_BATCH = 16
# shared/presets.py `full`: 50 epochs of ceil(10_000 / 16) = 625 optimizer steps.
FULL_STEPS = 50 * math.ceil(10_000 / FULL_BATCH)
# Sustained bf16 throughput of one GPU: ~1/3 of an A100's or H100's dense peak.
DEFAULT_TFLOPS = 100.0
TARGET = 1.10  # planner within 10 % of the best
NODE_BUDGET = 200_000  # branch-and-bound nodes before an instance counts as too large
CORES = 16  # threads do not matter here; any count works


@dataclass(frozen=True)
class Sizing:
    """What a rehearsal measured of one job: memory line at the batch, FLOPs per step."""

    name: str
    fixed_gb: float
    per_clip_gb: float
    flops_per_step: float
    batch_size: int = FULL_BATCH
    run_hours: float | None = None  # a plan's run time (steps and evaluations), if it has one

    def model(self) -> MemoryModel:
        return MemoryModel(fixed_mb=self.fixed_gb * GB, per_clip_mb=self.per_clip_gb * GB,
                           floor_mb=0.0, measured={})


# A CPU rehearsal of `full` (README, "The full rehearsal on a 2-core CPU").
FULL_SIZINGS = (
    Sizing("baseline", 1.9, 2.08, 2.13e12),
    Sizing("joint-i3d", 5.2, 4.11, 8.04e14),
    Sizing("slowfast-frozen", 2.0, 2.12, 2.13e12),
)


@dataclass(frozen=True)
class Job:
    """A job as the launcher queues it: the planned GB (margin included) and its work."""

    name: str
    memory_gb: float
    hours: float  # alone on one GPU
    micro_batch: int = FULL_BATCH


@dataclass(frozen=True)
class Inventory:
    name: str
    gpus: tuple[Gpu, ...]

    @classmethod
    def of(cls, count: int, gb: int) -> Inventory:
        return cls(f"{count}x{gb} GB", tuple(Gpu(i, gb * GB, gb * GB) for i in range(count)))

    @property
    def largest_mb(self) -> int:
        return max(g.total_mb for g in self.gpus)


INVENTORIES = (Inventory.of(1, 80), Inventory.of(2, 24), Inventory.of(4, 80),
               Inventory.of(8, 40))


# ---------------------------------------------------------------------------- sizing jobs


def planned_job(sizing: Sizing, inventory: Inventory, hours: float, name: str) -> Job | None:
    """The job at the micro-batch orch's planner picks for this inventory (None: fits no GPU)."""
    micro, fits = choose_micro_batch(sizing.model(), sizing.batch_size, inventory.largest_mb)
    if not fits:
        return None
    memory_mb, _ = sizing.model().at(micro)
    return Job(name, (memory_mb + margin_for(memory_mb)) / GB, hours, micro)


def hours_of(flops_per_step: float, steps: int, tflops: float) -> float:
    return flops_per_step * steps / (tflops * 1e12) / 3600


def sizings_from_plan(path: Path) -> list[Sizing]:
    """Each job's memory line and FLOPs from a rehearsal's plan.json."""
    plan = Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    known = {s.name: s.flops_per_step for s in FULL_SIZINGS}
    sizings = []
    for job in plan.jobs:
        flops = job.flops_per_step or known.get(job.variant)
        if flops is None or job.fixed_mb is None or job.per_clip_mb is None:
            print(f"  {job.variant}: no memory line or FLOPs in the plan; left out")
            continue
        sizings.append(Sizing(job.variant, job.fixed_mb / GB, job.per_clip_mb / GB, flops,
                              job.batch_size, job.run_hours()))
    return sizings


def synthetic_sizings(rng: random.Random, count: int) -> list[tuple[Sizing, float]]:
    """A random mix: memory 4-80 GB at a batch of 16 (5-20 % of it fixed), 1-10 hours."""
    mix = []
    for i in range(count):
        memory = rng.uniform(4, 80)
        fixed = memory * rng.uniform(0.05, 0.20)
        sizing = Sizing(f"job{i}", fixed, (memory - fixed) / FULL_BATCH, 0.0)
        mix.append((sizing, 10 ** rng.uniform(0, 1)))
    return mix


# ---------------------------------------------------------------------------- simulation


@dataclass
class Outcome:
    """A simulated run: when it ended, and how long GPUs sat idle while another GPU was
    shared (work that packing locked onto a busy GPU, which an idle one could have done)."""

    makespan: float
    idle_while_shared: float = 0.0
    packed: int = 0  # jobs started on a GPU that already ran one
    ends: dict[int, float] = field(default_factory=dict)


def simulate(jobs: Sequence[Job], gpus: Sequence[Gpu],
             request_of: Callable[[Job], Request]) -> Outcome:
    """Drive orch's Scheduler event by event under the 1/k sharing model."""
    now = 0.0
    sched: Scheduler[int] = Scheduler(list(gpus), CORES, clock=lambda: now)
    for key, job in enumerate(jobs):
        sched.submit(key, request_of(job))
    sched.plan_threads()
    remaining: dict[int, float] = {}
    gpu_of: dict[int, int] = {}
    outcome = Outcome(0.0)
    while not sched.idle:
        busy = set(gpu_of.values())
        for key, assignment in sched.ready():
            (gpu,) = assignment.gpus
            outcome.packed += gpu in busy
            busy.add(gpu)
            remaining[key], gpu_of[key] = jobs[key].hours, gpu
        if not remaining:
            raise RuntimeError(f"queued jobs never start: {sched.queue}")
        sharing = dict(sched.pool.jobs_on)  # orch's own count; a copy, release() changes it
        step = min(remaining[k] * sharing[gpu_of[k]] for k in remaining)
        if any(n == 0 for n in sharing.values()) and any(n > 1 for n in sharing.values()):
            outcome.idle_while_shared += step * sum(n == 0 for n in sharing.values())
        now += step
        for key in list(remaining):
            remaining[key] -= step / sharing[gpu_of[key]]
            if remaining[key] <= 1e-9 * max(1.0, jobs[key].hours):
                del remaining[key], gpu_of[key]
                outcome.ends[key] = now
                sched.release(key)
    outcome.makespan = now
    return outcome


def planner(jobs: Sequence[Job], gpus: Sequence[Gpu]) -> Outcome:
    return simulate(jobs, gpus, lambda job: Request(1, job.memory_gb, work_s=job.hours))


def without_estimates(jobs: Sequence[Job], gpus: Sequence[Gpu]) -> Outcome:
    return simulate(jobs, gpus, lambda job: Request(1, job.memory_gb))


def one_per_gpu(jobs: Sequence[Job], gpus: Sequence[Gpu]) -> Outcome:
    whole_gpu_gb = max(g.total_mb for g in gpus) / GB  # the launcher's one_at_a_time request
    return simulate(jobs, gpus, lambda job: Request(1, whole_gpu_gb))


# ---------------------------------------------------------------------------- the best


def lower_bound(jobs: Sequence[Job], gpus: Sequence[Gpu]) -> float:
    return max(sum(j.hours for j in jobs) / len(gpus), max(j.hours for j in jobs))


def best_makespan(jobs: Sequence[Job], gpus: Sequence[Gpu],
                  node_budget: int = NODE_BUDGET) -> float | None:
    """The smallest largest-GPU-load over assignments of jobs to GPUs that hold them, exact
    (see the module docstring for why that is the best over all schedules); None when the
    search needs more than ``node_budget`` nodes."""
    order = sorted(jobs, key=lambda j: -j.hours)  # long jobs first: tight bounds early
    eligible = [[g for g, gpu in enumerate(gpus) if gpu.total_mb >= Request(1, j.memory_gb)
                 .memory_mb] for j in order]
    if any(not e for e in eligible):
        raise NeverFits("a job fits no GPU")
    loads = [0.0] * len(gpus)
    best = math.inf
    nodes = 0
    suffix = [sum(j.hours for j in order[i:]) for i in range(len(order) + 1)]

    def search(i: int) -> None:
        nonlocal best, nodes
        nodes += 1
        if nodes > node_budget:
            raise _TooLarge
        if i == len(order):
            best = min(best, max(loads))
            return
        if max(max(loads), (sum(loads) + suffix[i]) / len(gpus)) >= best - 1e-12:
            return
        tried: set[tuple[int, float]] = set()
        for g in eligible[i]:
            twin = (gpus[g].total_mb, loads[g])  # identical GPUs with equal loads: try one
            if twin in tried or loads[g] + order[i].hours >= best - 1e-12:
                continue
            tried.add(twin)
            loads[g] += order[i].hours
            search(i + 1)
            loads[g] -= order[i].hours

    try:
        search(0)
    except _TooLarge:
        return None
    return best


class _TooLarge(Exception):
    """The branch-and-bound ran past its node budget."""


# ---------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Row:
    inventory: str
    instance: str
    jobs: int
    planner: Outcome
    one_per_gpu: Outcome
    no_estimates: Outcome
    best: float | None
    bound: float

    @property
    def ratio(self) -> float | None:
        return self.planner.makespan / self.best if self.best else None

    def why(self) -> str:
        """Why the planner missed the target, from what the simulation saw."""
        if self.ratio is None or self.ratio <= TARGET:
            return ""
        if self.planner.idle_while_shared > 1e-9:
            return (f"packed {self.planner.packed} job(s) onto busy GPUs; later a GPU sat idle "
                    f"{self.planner.idle_while_shared:.1f} GPU-h while another was shared")
        return "greedy order: longest first is not the best partition here"


def evaluate(name: str, jobs: Sequence[Job], inventory: Inventory) -> Row:
    best = best_makespan(jobs, inventory.gpus)
    return Row(inventory.name, name, len(jobs), planner(jobs, inventory.gpus),
               one_per_gpu(jobs, inventory.gpus), without_estimates(jobs, inventory.gpus),
               best, lower_bound(jobs, inventory.gpus))


def full_instances(sizings: Sequence[Sizing], inventory: Inventory, steps: int,
                   tflops: float) -> list[tuple[str, list[Job]]]:
    """The `full` jobs, one seed and three (variant by variant, seed by seed: the launcher's
    order)."""
    out = []
    for seeds in (1, 3):
        jobs = [planned_job(s, inventory, s.run_hours if s.run_hours is not None
                            else hours_of(s.flops_per_step, steps, tflops), f"{s.name}-s{seed}")
                for s in sizings for seed in range(seeds)]
        out.append((f"full x{seeds} seed{'s' if seeds > 1 else ''}",
                    [j for j in jobs if j is not None]))
    return out


def mix_instances(inventory: Inventory, mixes: int, seed: int) -> list[tuple[str, list[Job]]]:
    rng = random.Random(seed)
    out = []
    for m in range(mixes):
        count = rng.randint(3, 12)
        jobs = [planned_job(s, inventory, hours, s.name)
                for s, hours in synthetic_sizings(rng, count)]
        out.append((f"mix {m} ({count} jobs)", [j for j in jobs if j is not None]))
    return out


def print_table(inventory: Inventory, rows: Sequence[Row]) -> None:
    print(f"\n{inventory.name}")
    print(f"  {'instance':<20} {'planner h':>10} {'best h':>22} {'1/GPU h':>9} "
          f"{'plan/best':>9} {'no-est h':>9}  why (when over {TARGET:.2f})")
    for r in rows:
        best = f"{r.best:.2f}" if r.best is not None else f"n/a (too large) >= {r.bound:.2f}"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "n/a"
        print(f"  {r.instance:<20} {r.planner.makespan:>10.2f} {best:>22} "
              f"{r.one_per_gpu.makespan:>9.2f} {ratio:>9} {r.no_estimates.makespan:>9.2f}  "
              f"{r.why()}")


def main(argv: Sequence[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", type=Path, help="plan.json of a rehearsal, its run times "
                   "(steps and evaluations) where it has them (default: the figures of the "
                   "README's CPU rehearsal of full, training steps only)")
    p.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS,
                   help="sustained TFLOP/s of one GPU")
    p.add_argument("--steps", type=int, default=FULL_STEPS, help="optimizer steps per job")
    p.add_argument("--mixes", type=int, default=8, help="random mixes per inventory")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    sizings = sizings_from_plan(args.plan) if args.plan else list(FULL_SIZINGS)
    print("Sharing model: jobs on one GPU must fit its memory together; k jobs on a GPU each "
          "run at 1/k speed\n(a GPU's work is conserved); a job stays on its GPU. "
          f"full: {args.steps} steps at {args.tflops:g} TFLOP/s per GPU.")
    print("best = exact (branch-and-bound over job-to-GPU assignments, memory sizes as the "
          "planner fixed them;\nno schedule under this model beats the best assignment run "
          "back to back).\n1/GPU = one job per GPU in queue order; no-est = the planner "
          "without run-time estimates\n(queue order, idle GPU first, else best fit).")
    rows: list[Row] = []
    for inventory in INVENTORIES:
        instances = (full_instances(sizings, inventory, args.steps, args.tflops)
                     + mix_instances(inventory, args.mixes, args.seed))
        table = [evaluate(name, jobs, inventory) for name, jobs in instances]
        print_table(inventory, table)
        rows += table
    summarize(rows, time.perf_counter() - t0)
    return rows


def summarize(rows: Sequence[Row], seconds: float) -> None:
    rated = [r for r in rows if r.ratio is not None]
    worst = max(rated, key=lambda r: r.ratio or 0.0)
    over = sum((r.ratio or 0.0) > TARGET for r in rated)
    blind = max(r.no_estimates.makespan / (r.best or math.inf) for r in rated)
    print(f"\nworst planner/best: {worst.ratio:.3f} ({worst.inventory}, {worst.instance}); "
          f"{over} of {len(rated)} instances over {TARGET:.2f}; worst without estimates "
          f"{blind:.3f}; {seconds:.1f} s")


if __name__ == "__main__":
    main()
