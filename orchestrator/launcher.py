"""The run driver: shared jobs, gates, then training jobs on the device slots.

One `Driver` per orch invocation holds the lock, owns the RunState and is its only writer.
Every change is saved atomically and passed to `on_update` (the live view). Ctrl-C or
SIGTERM stops every job's process group (SIGTERM, SIGKILL after the grace period), records
the jobs as cancelled and leaves worktrees and checkpoints in place for `--resume`.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from orchestrator import gate as gates
from orchestrator import shared_jobs
from orchestrator import worktrees as wt
from orchestrator.config import Config, Variant
from orchestrator.devices import Gpu, NeverFits, Request, cpu_cores, discover_gpus, thread_share
from orchestrator.errors import GateFailed, Interrupted, JobFailed, Locked, OrchError, UsageError
from orchestrator.executor import (
    Executor,
    JobHandle,
    JobSpec,
    LocalExecutor,
    stop,
    stop_group,
)
from orchestrator.scheduler import Scheduler
from orchestrator.state import (
    JobState,
    RunState,
    Stage,
    job_name,
    latest_run_id,
    load_run,
    new_run_id,
    read_events,
    refresh_liveness,
    run_dir,
    save_run,
    write_atomic,
)

OnUpdate = Callable[[RunState], None]
POLL_S = 0.1
TAIL_LINES = 20
THREADS_FILE = "orch-threads"  # in a job's output dir: its current thread grant
OOM_RE = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I)


# ---------------------------------------------------------------------------- lock


@contextmanager
def run_lock(home: Path) -> Iterator[None]:
    """Hold `<state>/lock` for the life of a run; a second orch run is refused. The kernel
    drops the lock when the process dies, so a killed orchestrator never leaves it stuck."""
    home.mkdir(parents=True, exist_ok=True)
    f: TextIO = open(home / "lock", "a+")  # noqa: SIM115 - held open for the whole run
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise Locked(
                f"another orch run (pid {holder}) is running here; wait for it, watch it with "
                "`orch monitor`, or stop it (Ctrl-C in its terminal)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


@contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, and Ctrl-C works even if the parent ignored SIGINT."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


# ---------------------------------------------------------------------------- failures


def log_tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 16384))
        lines = f.read().decode(errors="replace").splitlines()
    return [ln.rstrip() for ln in lines if ln.strip()][-n:]


def exit_reason(code: int, events_path: Path, tail: list[str]) -> str:
    """One line for why a job ended with `code`: its error event, else its log's last line.
    A CUDA out-of-memory is named as such whichever way it shows up."""
    errors = [e for e in read_events(events_path) if e.get("event") == "error"]
    text = "\n".join(tail)
    if (errors and errors[-1].get("kind") == "oom") or OOM_RE.search(text):
        detail = str(errors[-1].get("message", "")) if errors else ""
        return "CUDA out of memory" + (f": {detail}" if detail else "")
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"killed by {signal.Signals(code - 128).name}"
    if errors and errors[-1].get("message"):
        return f"exit {code}: {errors[-1]['message']}"[:300]
    last = next((ln.strip() for ln in reversed(tail) if not ln.startswith("$ ")), "")
    return f"exit {code}: {last}"[:300] if last else f"exit {code}"


def outcome_error(run: RunState) -> OrchError | None:
    """The error a command exits with for this finished run, or None if it all went well."""
    failed = [j for j in run.jobs if j.stage == Stage.failed]
    gated = sorted({j.variant for j in run.jobs if j.stage == Stage.gate_failed})
    if failed:
        first = failed[0]
        return JobFailed(
            f"{len(failed)} job(s) failed, first {first.name}: {first.reason}; "
            f"log: {first.log_path}"
        )
    if gated:
        return GateFailed(
            f"gate failed for {', '.join(gated)}; see `orch status`, fix, then run again"
        )
    return None


# ---------------------------------------------------------------------------- driver


@dataclass
class Driver:
    cfg: Config
    home: Path
    on_update: OnUpdate | None = None
    executor: Executor = field(default_factory=LocalExecutor)
    gpus: list[Gpu] | None = None  # None: discover
    cores: int | None = None
    run: RunState = field(init=False)
    handles: dict[str, tuple[JobHandle, Any]] = field(default_factory=dict)
    _last_view: float = 0.0

    # --- state

    def save(self) -> None:
        save_run(self.home, self.run)
        self._view(force=True)

    def _view(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_update is not None and (force or now - self._last_view >= 0.25):
            self._last_view = now
            self.on_update(self.run)

    def _new_run(
        self, command: str, preset: str, variants: list[Variant], seeds: int,
        stage: Stage = Stage.pending,
    ) -> None:
        rid = new_run_id()
        self.run = RunState(
            run_id=rid, preset=preset, started=time.time(), orchestrator_pid=os.getpid(),
            command=command,
        )
        rdir = run_dir(self.home, rid)
        for v in variants:
            for seed in range(seeds):
                name = job_name(v.name, seed, seeds)
                self.run.jobs.append(
                    JobState(
                        variant=v.name, seed=seed, preset=preset, name=name, branch=v.branch,
                        stage=stage,
                        worktree=str(self.cfg.worktree_path(v)),
                        output_dir=str(rdir / name), log_path=str(rdir / name / "train.log"),
                    )
                )
        self.save()

    def _variant(self, name: str) -> Variant:
        return next(v for v in self.cfg.variants if v.name == name)

    # --- the phases

    def _wait(self, on_exit: Callable[[str, int], None]) -> None:
        """Poll the running handles until all have ended, calling on_exit for each."""
        while self.handles:
            for key, (h, _) in list(self.handles.items()):
                code = h.poll()
                if code is not None:
                    del self.handles[key]
                    on_exit(key, code)
            self._view()
            time.sleep(POLL_S)

    def shared(self, preset: str) -> dict[str, list[str]]:
        """Run (or reuse) the shared jobs this preset's variants need; per variant, the train
        arguments that hand it their artifacts."""
        wanted = {j.variant for j in self.run.jobs}
        args: dict[str, list[str]] = {name: [] for name in wanted}
        plans = [p for p in shared_jobs.plan(self.cfg, self.home, preset)
                 if any(p.job.serves(name) for name in wanted)]
        # Independent jobs that are not cached go through the same CPU-slot queue as the
        # trainings, in config order (put the longest first): as many at once as the cores
        # hold at their thread share, the next one starting when one ends, and once nothing
        # waits, the cores they free go to the ones still running. (On a GPU machine they all
        # use GPU 0 beside their threads.)
        todo = {p.name: p for p in plans if not p.cached}
        cuda = "0" if self._gpus() else ""
        sched: Scheduler[str] = Scheduler([], self._cores())
        for name in todo:
            sched.submit(name, Request(gpus=0))
        sched.plan_threads()
        specs: dict[str, JobSpec] = {}
        codes: dict[str, int] = {}

        def start_ready() -> None:
            for name, a in sched.ready():
                specs[name] = shared_jobs.spec(self.cfg, todo[name], cuda, a.threads)
                self.handles[name] = (self.executor.submit(specs[name]), todo[name])

        def ended(name: str, code: int) -> None:
            codes[name] = code
            sched.release(name)
            start_ready()
            if not cuda and self.executor.thread_grants:
                for other, threads in sched.lend_idle_cores().items():
                    gates.grant_threads(todo[other].threads_file, threads)

        start_ready()
        # The variants wait on these: say so in the state, for the live view and `status`.
        self.run.shared_running = [p.job.name for p in todo.values()]
        self.save()
        self._wait(ended)
        self.run.shared_running = []
        failures = []
        for name, spec in specs.items():
            p, code = todo[name], codes[name]
            if code != 0 or not shared_jobs.finish(p):
                tail = log_tail(spec.log_path)
                reason = exit_reason(code, p.work_dir / "events.jsonl", tail)
                if code == 0:
                    reason = f"it wrote no {p.job.artifact}"
                failures.append(f"shared job {p.job.name} ({preset}) failed: {reason}; "
                                f"log: {spec.log_path}")
        if failures:
            raise JobFailed("; ".join(failures))
        for p in plans:
            self.run.artifacts[p.job.name] = str(p.artifact)
            for name in wanted:
                if p.job.serves(name):
                    args[name] += p.train_args
        self.save()
        return args

    def gate(self, jobs: list[JobState], final_stage: Stage) -> None:
        """Run the gate of every variant among `jobs`, all at once."""
        by_variant: dict[str, list[JobState]] = {}
        for j in jobs:
            by_variant.setdefault(j.variant, []).append(j)
        threads = thread_share(len(by_variant), self._cores())
        infos: dict[str, tuple[str, JobSpec, float]] = {}
        for name, group in by_variant.items():
            v = self._variant(name)
            worktree = wt.require_worktree(self.cfg, v)
            out = run_dir(self.home, self.run.run_id) / "gates" / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "junit.xml").unlink(missing_ok=True)
            spec = gates.gate_spec(self.cfg, v, worktree, out, threads)
            h = self.executor.submit(spec)
            for j in group:
                j.stage, j.pid, j.pgid, j.started, j.reason = (
                    Stage.gating, h.pid, h.pgid, time.time(), "")
            self.handles[spec.name] = (h, None)
            infos[spec.name] = (name, spec, time.time())
        self.save()

        def done(key: str, code: int) -> None:
            name, spec, t0 = infos[key]
            result = gates.gate_result(
                spec.log_path.parent / "junit.xml", code, time.time() - t0, spec.log_path
            )
            for j in by_variant[name]:
                j.gate = result
                j.pid = j.pgid = None
                if result.passed:
                    j.stage = final_stage
                    if final_stage.finished:
                        j.finished = time.time()
                else:
                    j.stage, j.finished = Stage.gate_failed, time.time()
                    j.reason = gates.failure_reason(result)
            self.save()

        self._wait(done)

    def train(
        self, jobs: list[JobState], extra_args: dict[str, list[str]], resume: bool
    ) -> None:
        """Queue the jobs on the device slots and run them until every one has ended."""
        sched: Scheduler[str] = Scheduler(self._gpus(), self._cores())
        for j in jobs:
            r = self._variant(j.variant).resources
            try:
                if r.gpus and not self._gpus() and not self.executor.cpu_fallback:
                    # A cluster without GPUs would leave this job pending forever: say so now.
                    raise NeverFits(f"needs {r.gpus} GPU(s); {self.executor.where} has none")
                sched.submit(j.name, Request(r.gpus, r.gpu_memory_gb, r.cpu_threads))
                j.stage = Stage.queued
            except NeverFits as e:
                j.stage, j.reason, j.finished = Stage.failed, f"cannot run here: {e}", time.time()
        sched.plan_threads()
        self.save()
        by_name = {j.name: j for j in jobs}

        def done(key: str, code: int) -> None:
            j = by_name[key]
            sched.release(key)
            grants = sched.lend_idle_cores() if self.executor.thread_grants else {}
            for other, threads in grants.items():
                gates.grant_threads(Path(by_name[other].output_dir) / THREADS_FILE, threads)
                by_name[other].threads = threads
            j.exit_code, j.finished, j.pid, j.pgid = code, time.time(), None, None
            if code == 0 and j.results_path.exists():
                j.stage, j.reason = Stage.done, ""
            else:
                tail = log_tail(Path(j.log_path))
                j.stage = Stage.failed
                j.log_tail = tail
                j.reason = (
                    exit_reason(code, j.events_path, tail) if code
                    else "exit 0 but no results.json"
                )
            self.save()

        while not sched.idle:
            for key, a in sched.ready():
                self._start(by_name[key], a.device, list(a.gpus), a.cuda_visible_devices,
                            a.threads, extra_args.get(by_name[key].variant, []), resume,
                            a.memory_mb)
            for key, (h, _) in list(self.handles.items()):
                code = h.poll()
                if code is not None:
                    del self.handles[key]
                    done(key, code)
            self._view()
            time.sleep(POLL_S)

    def _start(
        self, j: JobState, device: str, gpus: list[int], cuda: str, threads: int,
        extra_args: list[str], resume: bool, memory_mb: int = 0,
    ) -> None:
        v = self._variant(j.variant)
        worktree = wt.require_worktree(self.cfg, v)
        out = Path(j.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        snap = wt.snapshot(worktree)
        j.commit, j.dirty = snap.commit, snap.dirty
        if snap.dirty:
            write_atomic(out / "diff.patch", snap.diff)
            j.diff_path = str(out / "diff.patch")
        preset = self.cfg.presets[j.preset]
        argv = [
            self.cfg.python or sys.executable, "-m", v.module,
            "--preset", j.preset, "--output", str(out), "--seed", str(j.seed),
            "--threads", str(threads), *extra_args,
        ]
        if resume and (out / "checkpoints" / "last.pt").exists():
            argv.append("--resume")
        if preset.data:
            argv += ["--data", str(self.cfg.root / preset.data)]
        if preset.tokenizer and "--tokenizer" not in argv:
            argv += ["--tokenizer", preset.tokenizer]
        argv += [*preset.train_args, *v.train_args]
        env = gates.job_env(worktree, cuda, threads, j.preset)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the indices nvidia-smi shows
        (out / THREADS_FILE).unlink(missing_ok=True)  # a grant from an earlier attempt
        env[gates.THREADS_FILE_ENV] = str(out / THREADS_FILE)
        h = self.executor.submit(
            JobSpec(j.name, argv, worktree, Path(j.log_path), env, tuple(gpus), threads,
                    gpu_memory_mb=memory_mb, commit=snap.commit, diff=snap.diff,
                    output_dir=out)
        )
        self.handles[j.name] = (h, j)
        j.stage, j.device, j.gpus, j.threads = Stage.training, device, gpus, threads
        j.pid, j.pgid, j.started, j.finished, j.exit_code = h.pid, h.pgid, time.time(), None, None
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

    # --- Ctrl-C

    def cancel(self, why: str) -> None:
        handles = [h for h, _ in self.handles.values()]
        stop(handles, self.cfg.grace_seconds)
        self.handles.clear()
        now = time.time()
        for j in self.run.jobs:
            if not j.stage.finished:
                j.stage, j.reason, j.finished, j.pid, j.pgid = (
                    Stage.cancelled, why, now, None, None)
        self.run.status, self.run.finished = "cancelled", now
        self.save()

    def finish(self) -> None:
        ok = all(j.stage == Stage.done for j in self.run.jobs)
        self.run.status = "done" if ok else "failed"
        self.run.finished = time.time()
        self.save()

    @contextmanager
    def guarded(self) -> Iterator[None]:
        try:
            with _signals():
                yield
        except KeyboardInterrupt:
            self.cancel("interrupted (Ctrl-C)")
            raise Interrupted(
                f"interrupted: jobs stopped and marked cancelled; worktrees and outputs kept "
                f"in {run_dir(self.home, self.run.run_id)}; continue with `orch train --resume`"
            ) from None
        except BaseException as e:
            # Stop what runs, and leave a state that says why instead of "running" forever.
            stop([h for h, _ in self.handles.values()], self.cfg.grace_seconds)
            self.handles.clear()
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            now = time.time()
            for j in self.run.jobs:
                if not j.stage.finished:
                    j.stage, j.reason, j.finished, j.pid, j.pgid = (
                        Stage.failed, f"orch stopped: {why}", now, None, None)
            self.run.status, self.run.finished = "failed", now
            self.save()
            raise


# ---------------------------------------------------------------------------- entry points


BACKENDS = ("local", "ray")


@contextmanager
def backend(cfg: Config, name: str, address: str | None = None) -> Iterator[Executor]:
    """The executor `--backend NAME [--address ADDR]` asks for, released when the run ends.
    Ray is imported only here, only for `ray`."""
    if name not in BACKENDS:
        raise UsageError(f"unknown --backend {name!r}; use {' or '.join(BACKENDS)}")
    if address and name != "ray":
        raise UsageError("--address is for --backend ray")
    if name == "local":
        yield LocalExecutor()
        return
    from orchestrator.ray_executor import connect

    ex = connect(cfg.ray, address, cfg.grace_seconds)
    try:
        yield ex
    finally:
        ex.close()



def test_all(
    cfg: Config, home: Path, variants: list[Variant], on_update: OnUpdate | None = None,
) -> RunState:
    """Every variant's gate at once, each in its own worktree."""
    with run_lock(home):
        d = Driver(cfg, home, on_update)
        for v in variants:
            wt.require_worktree(cfg, v)
        d._new_run("test-all", cfg.gate_preset, variants, 1)
        with d.guarded():
            d.gate(d.run.jobs, Stage.done)
            d.finish()
        return d.run


def train(
    cfg: Config,
    home: Path,
    variants: list[Variant],
    preset: str,
    seeds: int = 1,
    resume: bool = False,
    spawn: bool = False,
    command: str = "train",
    on_update: OnUpdate | None = None,
    gpus: list[Gpu] | None = None,
    executor: Executor | None = None,
) -> RunState:
    """Shared jobs, gates, then training jobs: the work of `orch train` and `orch run`.
    `executor` says where the jobs run (default: subprocesses on this machine)."""
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    with run_lock(home):
        d = Driver(cfg, home, on_update, executor=executor or LocalExecutor(), gpus=gpus)
        if spawn:
            wt.spawn(cfg, variants)
        for v in variants:
            wt.require_worktree(cfg, v)
        if resume:
            _resume(d, variants)
        else:
            d._new_run(command, preset, variants, seeds,
                       Stage.spawned if spawn else Stage.pending)
        with d.guarded():
            extra = d.shared(d.run.preset)
            need_gate = [j for j in d.run.jobs if j.stage in (Stage.pending, Stage.spawned)]
            if need_gate:
                d.gate(need_gate, Stage.queued)
            todo = [j for j in d.run.jobs if j.stage == Stage.queued]
            d.train(todo, extra, resume)
            d.finish()
        return d.run


def _resume(d: Driver, variants: list[Variant]) -> None:
    rid = latest_run_id(d.home, commands=("train", "run"))
    old = load_run(d.home, rid) if rid else None
    if old is None:
        raise UsageError("nothing to resume: no earlier `orch train` or `orch run` here")
    old = refresh_liveness(old)
    names = {v.name for v in variants}
    todo = [j for j in old.jobs if j.variant in names and j.stage not in (
        Stage.done, Stage.gate_failed)]
    if not todo:
        raise UsageError(f"run {old.run_id} has nothing left to do; start a new one with "
                         "`orch train`")
    for j in todo:
        # An orphan from a killed orchestrator still runs: stop it, then continue from its
        # last checkpoint, so no job runs twice over the same output dir.
        if j.pgid:
            stop_group(j.pgid, d.cfg.grace_seconds)
        gate_ok = j.gate is not None and j.gate.passed
        j.stage = Stage.queued if gate_ok else Stage.pending
        j.pid = j.pgid = j.exit_code = j.finished = None
        j.reason = ""
    old.orchestrator_pid, old.status, old.finished = os.getpid(), "running", None
    d.run = old
    d.save()


def run_all(
    cfg: Config,
    home: Path,
    variants: list[Variant],
    preset: str,
    seeds: int = 1,
    on_update: OnUpdate | None = None,
    executor: Executor | None = None,
) -> tuple[RunState, Path | None]:
    """`orch run`: spawn, shared jobs, gates, training, then the comparison report (also when
    some jobs failed: the report shows failures). Returns the run and report.md's path."""
    run = train(cfg, home, variants, preset, seeds=seeds, spawn=True, command="run",
                on_update=on_update, executor=executor)
    try:
        from orchestrator.report import build_report
    except ImportError:
        return run, None
    rdir = run_dir(home, run.run_id)
    build_report(rdir)
    report = rdir / "report.md"
    return run, report if report.exists() else None
