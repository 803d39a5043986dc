"""The queue in front of the device slots: jobs wait in order until their slot is free.

`Scheduler` wraps a `devices.Pool`. The launcher offers it the queued jobs on every tick,
starts what `ready()` returns and hands slots back with `release()` when a job ends.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from orchestrator.devices import Assignment, Gpu, NeverFits, Pool, Request, thread_share

K = TypeVar("K", bound=Hashable)


@dataclass
class Scheduler(Generic[K]):
    gpus: list[Gpu]
    cores: int
    pool: Pool = field(init=False)
    queue: list[tuple[K, Request]] = field(default_factory=list)
    running: dict[K, Assignment] = field(default_factory=dict)
    requests: dict[K, Request] = field(default_factory=dict)
    default_threads: int = 1

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

    def ready(self) -> list[tuple[K, Assignment]]:
        """Take slots for the queued jobs that fit now, in queue order without overtaking
        a waiting job of the same kind (a CPU job never jumps a waiting CPU job)."""
        started: list[tuple[K, Assignment]] = []
        waiting: list[tuple[K, Request]] = []
        blocked_cpu = False
        for key, req in self.queue:
            cpu = req.gpus == 0 or not self.gpus
            a = None if (cpu and blocked_cpu) else self.pool.place(req, self.default_threads)
            if a is None:
                waiting.append((key, req))
                blocked_cpu = blocked_cpu or cpu
                continue
            self.running[key] = a
            started.append((key, a))
        self.queue = waiting
        return started

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

    def drop(self, key: K) -> None:
        self.queue = [(k, r) for k, r in self.queue if k != key]

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running


__all__ = ["Scheduler", "NeverFits"]
