"""The run driver: shared jobs, gates, then training jobs on the device slots.

One `Driver` per orch invocation holds the lock, owns the RunState and is its only writer.
Changes are saved atomically (at most a few times a second while jobs run, at once when the
run ends) and passed to `on_update` (the live view). Ctrl-C or SIGTERM stops every job
(SIGTERM, SIGKILL after the grace period), records the jobs as cancelled and leaves
worktrees and checkpoints in place for `--resume`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import gate as gates
from orchestrator import phase_jobs as phases
from orchestrator import shared_jobs
from orchestrator import worktrees as wt
from orchestrator.config import Config, Variant
from orchestrator.devices import Gpu, NeverFits, Request, cpu_cores, discover_gpus, thread_share
from orchestrator.errors import Interrupted, JobFailed, UsageError
from orchestrator.executors import Executor, JobHandle, JobSpec, LocalExecutor, stop
from orchestrator.failures import exit_reason, log_tail, out_of_memory
from orchestrator.formats import StartEvent, read_events, write_text_atomic
from orchestrator.jobenv import THREADS_FILE, StandIns, grant_threads, job_env, train_argv
from orchestrator.lock import interrupt_reason, run_lock, stop_on_signals
from orchestrator.plan import Plan, fold_run_peaks, load_plan
from orchestrator.resume import resumable_run
from orchestrator.scheduler import Scheduler
from orchestrator.state import (
    JobState,
    RunState,
    RunStatus,
    Stage,
    new_jobs,
    new_run_id,
    run_dir,
    save_run,
)

OnUpdate = Callable[[RunState], None]
POLL_S = 0.1
SAVE_INTERVAL_S = 0.25  # while jobs run, state.json is rewritten at most this often
VIEW_INTERVAL_S = 0.25


# ---------------------------------------------------------------------------- driver


@dataclass
class Driver:
    cfg: Config
    home: Path
    on_update: OnUpdate | None = None
    executor: Executor = field(default_factory=LocalExecutor)
    gpus: list[Gpu] | None = None  # None: ask the executor, else discover
    cores: int | None = None
    plan: Plan | None = None  # measured by a rehearsal (and runs since): micro-batches, memory
    stand_ins: StandIns | None = None  # set in a rehearsal: its stand-in downloads
    one_at_a_time: bool = False  # a rehearsal measures each job alone
    run: RunState = field(init=False)
    handles: dict[str, JobHandle] = field(default_factory=dict)
    _unsaved: bool = False
    _last_save: float = 0.0
    _last_view: float = 0.0

    # --- state

    def save(self, *, now: bool = False) -> None:
        """Record a change: written at once with ``now``, else within SAVE_INTERVAL_S (the
        poll loop flushes), so a burst of job events costs one write."""
        self._unsaved = True
        if now or time.monotonic() - self._last_save >= SAVE_INTERVAL_S:
            self._flush()

    def _flush(self) -> None:
        if self._unsaved:
            save_run(self.home, self.run)
            self._unsaved, self._last_save = False, time.monotonic()
            self._view(force=True)
        else:
            self._view()

    def _view(self, force: bool = False) -> None:
        clock = time.monotonic()
        if self.on_update is not None and (force or clock - self._last_view >= VIEW_INTERVAL_S):
            self._last_view = clock
            self.on_update(self.run)

    def new_run(
        self, command: str, preset: str, variants: list[Variant], seeds: int | list[int],
        stage: Stage = Stage.pending, overrides: dict[str, str] | None = None,
    ) -> None:
        """A run of each variant at each seed (a count: seeds 0..n-1), ``overrides`` of the
        variants' configs passed to every training job."""
        rid = new_run_id()
        self.run = RunState(
            run_id=rid, preset=preset, started=time.time(), orchestrator_pid=os.getpid(),
            orchestrator_started=time.time(), command=command,
            jobs=new_jobs(self.cfg, run_dir(self.home, rid), variants, preset, seeds,
                          stage=stage, overrides=overrides),
        )
        save_run(self.home, self.run, latest=True)

    def adopt(self, run: RunState) -> None:
        """Take over an earlier run (resume): this process now owns it."""
        run.orchestrator_pid, run.orchestrator_started = os.getpid(), time.time()
        run.status, run.finished = RunStatus.running, None
        self.run = run
        save_run(self.home, run, latest=True)

    def _variant(self, name: str) -> Variant:
        return next(v for v in self.cfg.variants if v.name == name)

    # --- the one poll loop

    def _run_jobs(self, start_ready: Callable[[], None], ended: Callable[[str, int], None],
                  waiting: Callable[[], bool]) -> None:
        """Start what may start, reap what ended, save and redraw; until nothing runs and
        nothing waits."""
        start_ready()
        while self.handles or waiting():
            for key, handle in list(self.handles.items()):
                code = handle.poll()
                if code is not None:
                    del self.handles[key]
                    ended(key, code)
                    start_ready()  # its slot goes to the next job before anything else
            self._flush()
            time.sleep(POLL_S)
        self._flush()

    # --- shared jobs

    def shared(self, preset: str) -> dict[str, list[str]]:
        """Run (or reuse) the shared jobs this preset's variants need; per variant, the train
        arguments that hand it their artifacts."""
        wanted = {j.variant for j in self.run.jobs}
        rehearse = self.run.command == "rehearse"
        plans = [p for p in shared_jobs.plan(self.cfg, self.home, preset, rehearse=rehearse)
                 if any(p.job.serves(name) for name in wanted)]
        todo = {p.name: p for p in plans if not p.cached}
        # The variants wait on these: say so in the state, for the live view and `status`.
        self.run.shared_running = [p.job.name for p in todo.values()]
        phases.plan_shared(self.run, plans)  # a row each in the live view, cached ones too
        self.save(now=True)
        failures = [why for why in self._run_shared(todo).values() if why]
        self.run.shared_running = []
        if failures:
            raise JobFailed("; ".join(failures))
        args: dict[str, list[str]] = {name: [] for name in wanted}
        for p in plans:
            self.run.artifacts[p.job.name] = str(p.artifact)
            for name in wanted:
                if p.job.serves(name):
                    args[name] += p.train_args
        self.save(now=True)
        return args

    def _run_shared(self, todo: dict[str, shared_jobs.SharedPlan]) -> dict[str, str]:
        """The shared jobs that are not cached, through the same CPU-slot queue as the
        trainings, in config order (put the longest first): as many at once as the cores hold
        at their thread share, the next one starting when one ends; once nothing waits, the
        cores they free go to the ones still running. (On a GPU machine they all use GPU 0
        beside their threads.) Returns why each job failed ("" for one that did not)."""
        cuda = "0" if self._gpus() else ""
        sched: Scheduler[str] = Scheduler([], self._cores())
        for name in todo:
            sched.submit(name, Request(gpus=0))
        sched.plan_threads()
        failures: dict[str, str] = {}

        def start_ready() -> None:
            for name, a in sched.ready():
                spec = shared_jobs.spec(self.cfg, todo[name], cuda, a.threads)
                self.handles[name] = self.executor.submit(spec)
                phases.started(self.run, spec, self.handles[name].pid)
                self.save()
            if not cuda and self.executor.thread_grants:
                for other, threads in sched.lend_idle_cores().items():
                    grant_threads(todo[other].threads_file, threads)

        def ended(name: str, code: int) -> None:
            failures[name] = phases.shared_ended(self.run, todo[name], code)  # publishes it
            sched.release(name)
            self.save()

        with phases.closed_on_exit(self.run, "shared"):
            self._run_jobs(start_ready, ended, lambda: bool(sched.queue))
        return failures

    # --- gates

    def gate(self, jobs: list[JobState], final_stage: Stage) -> None:
        """Run the gate of every variant among `jobs`, all at once."""
        by_variant: dict[str, list[JobState]] = {}
        for j in jobs:
            by_variant.setdefault(j.variant, []).append(j)
        threads = thread_share(len(by_variant), self._cores())
        specs: dict[str, tuple[str, JobSpec, float]] = {}
        for name in by_variant:
            worktree = wt.require_worktree(self.cfg, self._variant(name))
            out = run_dir(self.home, self.run.run_id) / "gates" / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "junit.xml").unlink(missing_ok=True)
            spec = gates.gate_spec(self.cfg, self._variant(name), worktree, out, threads)
            specs[spec.name] = (name, spec, time.time())

        def start_all() -> None:  # once: an ended gate leaves `specs`
            for key, (name, spec, _) in list(specs.items()):
                if key in self.handles:
                    continue
                handle = self.executor.submit(spec)
                self.handles[key] = handle
                phases.started(self.run, spec, handle.pid)
                specs[key] = (name, spec, time.time())
                for j in by_variant[name]:
                    j.stage, j.pid, j.started, j.reason = Stage.gating, handle.pid, time.time(), ""
                self.save()

        def ended(key: str, code: int) -> None:
            name, spec, t0 = specs.pop(key)
            result = gates.gate_result(spec.log_path.parent / "junit.xml", code,
                                       time.time() - t0, spec.log_path)
            gates.record_result(self.run, spec, code, result, by_variant[name], final_stage)
            self.save()

        with phases.closed_on_exit(self.run, "gate"):
            self._run_jobs(start_all, ended, lambda: False)

    # --- training

    def train(
        self, jobs: list[JobState], extra_args: dict[str, list[str]], resume: bool
    ) -> None:
        """Queue the jobs on the device slots and run them until every one has ended."""
        sched: Scheduler[str] = Scheduler(self._gpus(), self._cores())
        for j in jobs:
            self._queue(sched, j)
        sched.plan_threads()
        self.save(now=True)
        by_name = {j.name: j for j in jobs}

        def start_ready() -> None:
            for key, a in sched.ready():
                j = by_name[key]
                self._start(j, a.device, list(a.gpus), a.cuda_visible_devices, a.threads,
                            extra_args.get(j.variant, []), resume, a.memory_mb)
            if self.executor.thread_grants:
                for other, threads in sched.lend_idle_cores().items():
                    grant_threads(Path(by_name[other].output_dir) / THREADS_FILE, threads)
                    by_name[other].threads = threads
                    self.save()

        def ended(key: str, code: int) -> None:
            sched.release(key)
            self._record_exit(by_name[key], code)
            if self._retry_smaller(by_name[key]):
                self._queue(sched, by_name[key])

        self._run_jobs(start_ready, ended, lambda: bool(sched.queue))

    def _queue(self, sched: Scheduler[str], j: JobState) -> None:
        """Queue ``j`` with what it needs: the plan's memory for its micro-batch when a
        rehearsal measured it, else the config's estimate for its preset."""
        r = self._variant(j.variant).resources_at(j.preset)
        memory_gb, j.memory_basis = r.gpu_memory_gb, "config"
        planned = self.plan.job(j.variant) if self.plan is not None else None
        if planned is not None and planned.fits and j.micro_batch in (None, planned.micro_batch):
            j.micro_batch = planned.micro_batch
            memory_gb, j.memory_basis = planned.planned_mb / 1024, "plan"
        # The plan's run time, when it has one: the scheduler then runs the longest first.
        hours = planned.run_hours() if planned is not None else None
        threads = self._cores() if self.one_at_a_time else r.cpu_threads
        if self.one_at_a_time and self._gpus():
            memory_gb = max(g.total_mb for g in self._gpus()) / 1024  # a whole GPU
        j.memory_mb = memory_gb * 1024 if r.gpus and self._gpus() else 0.0
        try:
            if r.gpus and not self._gpus() and not self.executor.cpu_fallback:
                # A cluster without GPUs would leave this job pending forever: say so now.
                raise NeverFits(f"needs {r.gpus} GPU(s); {self.executor.where} has none")
            sched.submit(j.name, Request(r.gpus, memory_gb, threads,
                                         work_s=hours * 3600 if hours is not None else None))
            j.stage = Stage.queued
        except NeverFits as e:
            j.stage, j.reason, j.finished = Stage.failed, f"cannot run here: {e}", time.time()

    def _retry_smaller(self, j: JobState) -> bool:
        """After an out-of-memory failure: go again from the last checkpoint with half the
        micro-batch (twice the accumulation), down to one clip. Not in a rehearsal, where
        running out is a measurement."""
        if j.stage != Stage.failed or self.stand_ins is not None or not out_of_memory(j):
            return False
        starts = [e for e in read_events(j.events_path, warn=False) if isinstance(e, StartEvent)]
        current = j.micro_batch or (starts[-1].micro_batch if starts else None)
        if not current or current <= 1:
            return False
        j.micro_batch = current // 2
        j.retries.append(f"out of memory at micro-batch {current}; "
                         f"retried at {j.micro_batch}")
        j.reason, j.exit_code, j.finished, j.log_tail = "", None, None, []
        return True

    def _record_exit(self, j: JobState, code: int) -> None:
        j.exit_code, j.finished, j.pid = code, time.time(), None
        if code == 0 and j.results_path.exists():
            j.stage, j.reason = Stage.done, ""
        else:
            tail = log_tail(Path(j.log_path))
            j.stage, j.log_tail = Stage.failed, tail
            j.reason = (exit_reason(code, j.events_path, tail) if code
                        else "exit 0 but no results.json")
        self.save()

    def _start(
        self, j: JobState, device: str, gpus: list[int], cuda: str, threads: int,
        extra_args: list[str], resume: bool, memory_mb: int = 0,
    ) -> None:
        v = self._variant(j.variant)
        worktree = self.cfg.worktree_path(v)
        if not worktree.is_dir():  # checked at the start of the run; removed since?
            wt.require_worktree(self.cfg, v)
        out = Path(j.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        snap = wt.snapshot(worktree)
        j.commit, j.dirty = snap.commit, snap.dirty
        if snap.dirty:
            write_text_atomic(out / "diff.patch", snap.diff)
            j.diff_path = str(out / "diff.patch")
        argv = train_argv(self.cfg, j, v, threads=threads, device=device,
                          shared_args=extra_args, resume=resume or bool(j.retries),
                          rehearsal=self.stand_ins)
        env = job_env(worktree, cuda, threads, j.preset, threads_file=out / THREADS_FILE)
        if self.stand_ins is not None:
            env.update(self.stand_ins.env)
        spec = JobSpec(j.name, argv, worktree, Path(j.log_path), env, tuple(gpus), threads,
                       gpu_memory_mb=memory_mb, commit=snap.commit, diff=snap.diff,
                       output_dir=out)
        handle = self.executor.submit(spec)
        self.handles[j.name] = handle
        j.stage, j.device, j.gpus, j.threads = Stage.training, device, gpus, threads
        j.pid, j.started, j.finished, j.exit_code = handle.pid, time.time(), None, None
        j.reason = ""
        self.save()

    # --- machine

    def _gpus(self) -> list[Gpu]:
        if self.gpus is None:
            found = self.executor.resources()
            self.gpus = found[0] if found else discover_gpus()[0]
        return self.gpus

    def _cores(self) -> int:
        if self.cores is None:
            found = self.executor.resources()
            self.cores = found[1] if found else cpu_cores()
        return self.cores

    # --- stopping

    def finish(self) -> None:
        ok = all(j.stage == Stage.done for j in self.run.jobs)
        self.run.status = RunStatus.done if ok else RunStatus.failed
        self.run.finished = time.time()
        self.save(now=True)
        if self.run.command in ("train", "run"):
            # A real run's peak at its micro-batch is a measurement the latest plan lacks.
            fold_run_peaks(self.home, self.run.run_id, self.run.jobs)

    def abort(self, stage: Stage, why: str, status: RunStatus) -> None:
        """Stop every running job and record the unfinished ones as ``stage`` for ``why``."""
        stop(list(self.handles.values()), self.cfg.grace_seconds)
        self.handles.clear()
        now = time.time()
        for j in self.run.jobs:
            if not j.stage.finished:
                j.stage, j.reason, j.finished, j.pid = stage, why, now, None
        self.run.status, self.run.finished = status, now
        self.save(now=True)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        try:
            with stop_on_signals():
                yield
        except KeyboardInterrupt as e:
            self.abort(Stage.cancelled, interrupt_reason(e), RunStatus.cancelled)
            raise Interrupted(
                f"interrupted: jobs stopped and marked cancelled; worktrees and outputs kept "
                f"in {run_dir(self.home, self.run.run_id)}; continue with `orch train --resume`"
            ) from None
        except BaseException as e:
            # Leave a state that says why, instead of "running" forever.
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            self.abort(Stage.failed, f"orch stopped: {why}", RunStatus.failed)
            raise


# ---------------------------------------------------------------------------- entry points


def test_all(
    cfg: Config, home: Path, variants: list[Variant], on_update: OnUpdate | None = None,
) -> RunState:
    """Every variant's gate at once, each in its own worktree."""
    with run_lock(home):
        d = Driver(cfg, home, on_update)
        for v in variants:
            wt.require_worktree(cfg, v)
        d.new_run("test-all", cfg.gate_preset, variants, 1)
        with d.guarded():
            d.gate(d.run.jobs, Stage.done)
            d.finish()
        return d.run


def train(
    cfg: Config,
    home: Path,
    variants: list[Variant],
    preset: str,
    seeds: int | list[int] = 1,
    resume: bool = False,
    spawn: bool = False,
    command: str = "train",
    on_update: OnUpdate | None = None,
    gpus: list[Gpu] | None = None,
    executor: Executor | None = None,
    overrides: dict[str, str] | None = None,
) -> RunState:
    """Shared jobs, gates, then training jobs: the work of `orch train` and `orch run`.
    `executor` says where the jobs run (default: subprocesses on this machine); ``seeds`` a
    count or the seeds themselves; ``overrides`` reach every training job's config."""
    if (seeds < 1) if isinstance(seeds, int) else not seeds:
        raise UsageError("--seeds must be at least 1")
    with run_lock(home):
        d = Driver(cfg, home, on_update, executor=executor or LocalExecutor(), gpus=gpus)
        if spawn:
            wt.spawn(cfg, variants)
        for v in variants:
            wt.require_worktree(cfg, v)
        if resume:
            d.adopt(resumable_run(cfg, home, variants))
        else:
            d.new_run(command, preset, variants, seeds,
                      Stage.spawned if spawn else Stage.pending, overrides)
        d.plan = load_plan(home, d.run.preset, "cuda" if d._gpus() else "cpu")
        with d.guarded():
            extra = d.shared(d.run.preset)
            need_gate = [j for j in d.run.jobs if j.stage in (Stage.pending, Stage.spawned)]
            if need_gate:
                d.gate(need_gate, Stage.queued)
            todo = [j for j in d.run.jobs if j.stage == Stage.queued]
            d.train(todo, extra, resume)
            d.finish()
        return d.run


def run_all(
    cfg: Config,
    home: Path,
    variants: list[Variant],
    preset: str,
    seeds: int | list[int] = 1,
    on_update: OnUpdate | None = None,
    executor: Executor | None = None,
    overrides: dict[str, str] | None = None,
) -> tuple[RunState, Path | None]:
    """`orch run`: spawn, shared jobs, gates, training, then the comparison report (also when
    some jobs failed: the report shows failures). Returns the run and report.md's path."""
    from orchestrator.report import build_report, write_report

    run = train(cfg, home, variants, preset, seeds=seeds, spawn=True, command="run",
                on_update=on_update, executor=executor, overrides=overrides)
    rdir = run_dir(home, run.run_id)
    report = write_report(build_report(rdir, cfg.study.spec() if cfg.study else None,
                                       folders=cfg.variant_folders()), rdir)
    return run, report.markdown_path
