"""The queue in front of the device slots: jobs wait until their slot is free.

`Scheduler` wraps a `devices.Pool`. The launcher offers it the queued jobs on every tick,
starts what `ready()` returns and hands slots back with `release()` when a job ends.

Two policies, chosen by what is known:

- Every GPU job has a work estimate (``Request.work_s``, a plan's run time): longest job
  first, each onto the GPU that will be free of work soonest (its running jobs' estimated
  remaining work plus the work of longer jobs already waiting for it), packed there now if
  it fits beside what runs, else waiting for that GPU. This is Graham's LPT rule made online;
  k jobs sharing a GPU are taken to each run at 1/k speed, so a GPU's remaining work falls by
  one second per second whatever it runs. ``benchmarks/scheduler.py`` measures it against
  the best schedule.
- Otherwise (no plan measured the run times): queue order, an idle GPU first, else the
  fullest GPU that still holds the job (``Pool.place``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from orchestrator.devices import Assignment, Gpu, NeverFits, Pool, Request, thread_share

K = TypeVar("K", bound=Hashable)


@dataclass
class _Busy:
    """A GPU's busy spell: since when, and the estimated work started on it since then."""

    since: float
    work_s: float


@dataclass
class Scheduler(Generic[K]):
    gpus: list[Gpu]
    cores: int
    pool: Pool = field(init=False)
    queue: list[tuple[K, Request]] = field(default_factory=list)
    running: dict[K, Assignment] = field(default_factory=dict)
    requests: dict[K, Request] = field(default_factory=dict)
    default_threads: int = 1
    clock: Callable[[], float] = time.monotonic  # seconds, for the work estimates
    busy: dict[int, _Busy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pool = Pool(list(self.gpus), self.cores)

    def submit(self, key: K, request: Request) -> None:
        """Queue a job. Raises NeverFits if this machine can never run it."""
        self.pool.check(request)
        self.queue.append((key, request))
        self.requests[key] = request

    def plan_threads(self) -> None:
        """Split the cores over every job known now (call once after queueing a batch)."""
        self.default_threads = thread_share(len(self.queue) + len(self.running), self.cores)

    @property
    def estimated(self) -> bool:
        """Whether every GPU job, queued or running, has a work estimate."""
        on_gpus = [r for _, r in self.queue if self._on_gpu(r)]
        on_gpus += [self.requests[k] for k, a in self.running.items() if a.gpus]
        return bool(self.gpus) and all(r.work_s is not None for r in on_gpus)

    def ready(self) -> list[tuple[K, Assignment]]:
        """Take slots for the queued jobs that can start now (see the module docstring for
        the order and the GPU each gets); a CPU job never jumps a waiting CPU job."""
        now = self.clock()
        estimated = self.estimated
        queue = self.queue
        if estimated:  # longest first; sorted() keeps the queue order among equals
            queue = sorted(queue, key=lambda item: -(item[1].work_s or 0.0))
        held = dict.fromkeys((g.index for g in self.gpus), 0.0)  # work waiting per GPU
        started: list[tuple[K, Assignment]] = []
        waiting: list[tuple[K, Request]] = []
        blocked_cpu = False
        for key, req in queue:
            cpu = not self._on_gpu(req)
            if cpu:
                a = None if blocked_cpu else self.pool.place(req, self.default_threads)
            elif estimated and req.gpus == 1:
                gpu = self._soonest_free(req, now, held)
                a = self.pool.place(req, self.default_threads, on=gpu)
                if a is None:
                    held[gpu] += req.work_s or 0.0
            else:
                a = self.pool.place(req, self.default_threads)
            if a is None:
                waiting.append((key, req))
                blocked_cpu = blocked_cpu or cpu
                continue
            self._start_work(a, req, now)
            self.running[key] = a
            started.append((key, a))
        self.queue = waiting
        return started

    def remaining_s(self, gpu: int, now: float) -> float:
        """Estimated work left on ``gpu``: what was started on it, less the time it has run."""
        spell = self.busy.get(gpu)
        return 0.0 if spell is None else max(0.0, spell.work_s - (now - spell.since))

    def _soonest_free(self, req: Request, now: float, held: dict[int, float]) -> int:
        """The GPU that holds ``req`` and will be free of work soonest (the smaller GPU on a
        tie, keeping the larger for jobs only it holds)."""
        holding = [g for g in self.gpus if g.free_mb >= req.memory_mb]
        best = min(holding, key=lambda g: (self.remaining_s(g.index, now) + held[g.index],
                                           g.total_mb, g.index))
        return best.index

    def _start_work(self, a: Assignment, req: Request, now: float) -> None:
        for gpu in a.gpus:
            spell = self.busy.setdefault(gpu, _Busy(now, 0.0))
            spell.work_s += req.work_s or 0.0

    def _on_gpu(self, req: Request) -> bool:
        return req.gpus > 0 and bool(self.gpus)

    def lend_idle_cores(self) -> dict[K, int]:
        """Once nothing waits, split the CPU threads freed by ended jobs over the CPU jobs
        still running that took an equal share (a job that named its threads keeps them).

        Returns the new thread count of each job that grew; the job itself picks it up
        while it runs (``shared.runtime.ThreadBudget``). Without this the last job of a run
        keeps the share it started with while the other cores idle.
        """
        if self.queue or self.pool.gpus:
            return {}
        growable = [k for k, a in self.running.items()
                    if not a.gpus and self.requests[k].threads is None]
        if not growable:
            return {}
        fixed = sum(a.threads for k, a in self.running.items() if k not in growable)
        share = max(1, (self.cores - fixed) // len(growable))
        grown: dict[K, int] = {}
        for k in growable:
            a = self.running[k]
            if share > a.threads:
                self.pool.free_threads -= share - a.threads
                self.running[k] = replace(a, threads=share)
                grown[k] = share
        return grown

    def release(self, key: K) -> None:
        a = self.running.pop(key, None)
        if a is not None:
            self.pool.release(a)
            for gpu in a.gpus:
                if self.pool.jobs_on[gpu] == 0:
                    self.busy.pop(gpu, None)  # idle: its next spell starts from nothing

    def drop(self, key: K) -> None:
        self.queue = [(k, r) for k, r in self.queue if k != key]

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running


__all__ = ["Scheduler", "NeverFits"]
