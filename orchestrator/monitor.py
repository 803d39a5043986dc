"""The live view of a run's jobs: a pure render function and a short polling loop.

- ``render_jobs(jobs, progress, logs)`` builds the table from data alone (tested on its own);
  the shared jobs' and gates' rows come first (``phase_view``).
- ``JobFeed`` follows one job's events.jsonl (incrementally, see ``EventTail``) and the last
  line of its log; ``LiveView`` keeps a feed per job, shared job and gate, and redraws on
  ``update(run)``, so the launcher can drive it from its own loop. Without a terminal it
  prints one plain line per change of stage or epoch (a shared job's step) instead
  (throttled), which is what CI logs want.
- ``watch(path)`` is the loop of ``orch monitor``: reload the state file when it changes,
  poll the feeds, redraw, stop when the run is over. Ctrl-C only detaches; the jobs belong
  to the orchestrator process and keep running.

Cost per poll is a few ``stat`` calls plus whatever bytes were appended since the last one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator import phase_view
from orchestrator import state as st
from orchestrator.errors import UsageError
from orchestrator.formats import EventTail, warn_corrupt
from orchestrator.progress import JobProgress
from orchestrator.ui import SPARK as SPARK  # re-exported: the cells live in ui
from orchestrator.ui import (
    STAGE_STYLE,
    bar,
    elapsed,
    fmt_duration,
    fmt_loss,
    fmt_memory,
    gate_summary,
    log_line,
    loss_cell,
)
from orchestrator.ui import sparkline as sparkline

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---------------------------------------------------------------------------- formatting


def code_label(job: st.JobState) -> str:
    """branch@short-commit, with "dirty" when the worktree had uncommitted changes, and the
    micro-batch after out-of-memory retries."""
    if not job.branch and not job.commit:
        return ""
    text = f"{job.branch or '?'}@{job.commit[:7] or '?'}" + (" dirty" if job.dirty else "")
    if job.retries:
        text += f" · OOM retry {len(job.retries)}: micro-batch {job.micro_batch}"
    return text


def fraction_done(job: st.JobState, p: JobProgress | None) -> float | None:
    if job.stage == st.Stage.done:
        return 1.0
    if p is None:
        return None
    if p.step is not None and p.total_steps:
        return p.step / p.total_steps
    if p.epoch is not None and p.epochs:
        return p.epoch / p.epochs
    return None


def _stage_text(job: st.JobState) -> Text:
    return Text(job.stage.value.replace("_", " "), style=STAGE_STYLE.get(job.stage, ""))


def _progress_cell(job: st.JobState, p: JobProgress | None, now: float) -> Text:
    if job.stage in (st.Stage.gating, st.Stage.gate_failed) or (p is None and job.gate):
        return Text(f"gate {gate_summary(job.gate)}" if job.gate else "gate running")
    frac = fraction_done(job, p)
    if p is None or frac is None:
        return Text("waiting for a device slot" if job.stage == st.Stage.queued else "")
    text = Text(f"{bar(frac)} {frac * 100:3.0f}%\n")
    epochs = f"/{p.epochs}" if p.epochs else ""
    steps = f"/{p.total_steps}" if p.total_steps else ""
    text.append(f"ep {p.epoch or 0}{epochs} · {p.step or 0}{steps}", style="dim")
    if job.stage == st.Stage.training:
        text.append(f" · ETA {fmt_duration(p.eta_at(now))}", style="dim")
    return text


def _reason(job: st.JobState, p: JobProgress | None) -> str:
    reason = job.reason
    if p is not None and p.error is not None and p.error.message not in reason:
        reason = f"{reason}: {p.error.message}" if reason else p.error.message
    if job.exit_code not in (None, 0) and "exit" not in reason:
        reason += f" (exit {job.exit_code})"
    return reason or "no reason recorded"


def render_jobs(jobs: Sequence[st.JobState], progress: Mapping[str, JobProgress],
                logs: Mapping[str, str] | None = None, *, now: float | None = None,
                phase_jobs: Sequence[st.PhaseJob] = ()) -> RenderableType:
    """The jobs table plus their last log lines; failures first and in red, with reasons.
    The shared jobs' and gates' rows (``phase_jobs``) come first, as they run first.

    ``progress`` and ``logs`` are keyed by job name; missing entries render as empty cells.
    """
    now = time.time() if now is None else now
    logs = logs or {}
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    for name in ("job", "stage", "device", "progress", "loss", "samples/s", "mem", "time"):
        left = name in ("job", "stage", "device", "progress")
        table.add_column(name, justify="left" if left else "right", no_wrap=True)
    width = max((len(name) for name in [*(row.name for row in phase_jobs),
                                        *(job.name for job in jobs)]), default=0)
    failures, tails = phase_view.add_rows(table, phase_jobs, progress, logs, now=now,
                                          width=width)
    for job in jobs:
        p = progress.get(job.name)
        device = job.device or (p.start.device if p and p.start and p.start.device else "-")
        job_cell = Text(job.name, style="bold") + Text(f"\n{code_label(job)}", style="dim")
        table.add_row(
            job_cell, _stage_text(job), device, _progress_cell(job, p, now),
            loss_cell(p.loss, p.losses) if p else loss_cell(None, ()),
            f"{p.samples_per_s:.1f}" if p and p.samples_per_s is not None else "-",
            fmt_memory(p.memory_mb if p else None), elapsed(job, now) or "-",
        )
        log = logs.get(job.name, "")
        if job.stage in (st.Stage.failed, st.Stage.gate_failed):
            failures.append(Text(f"✗ {job.name} {job.stage.value}: {_reason(job, p)}",
                                 style="bold red"))
            if log:
                failures.append(log_line(job.name, log, width))
        elif p is not None and p.error is not None and not job.stage.finished:
            # The job reported its error; the launcher has not reaped it yet. Say so now.
            failures.append(Text(f"✗ {job.name} error ({p.error.kind}): {p.error.message}",
                                 style="bold red"))
        elif job.stage == st.Stage.cancelled and job.reason:
            failures.append(Text(f"- {job.name} cancelled: {job.reason}", style="magenta"))
        elif log and not job.stage.finished:
            tails.append(log_line(job.name, log, width))
    notes = failures + tails
    return Group(table, *notes) if notes else table


def render_run(run: st.RunState, progress: Mapping[str, JobProgress] | None = None,
               logs: Mapping[str, str] | None = None, *, now: float | None = None,
               ) -> RenderableType:
    """A header line (run id, status, counts per stage) above ``render_jobs``."""
    now = time.time() if now is None else now
    counts: dict[str, int] = {}
    for job in run.jobs:
        counts[job.stage.value] = counts.get(job.stage.value, 0) + 1
    tally = ", ".join(f"{n} {stage.replace('_', ' ')}" for stage, n in counts.items())
    span = (run.finished or now) - run.started
    status_style = {"running": "yellow", "done": "green"}.get(run.status, "red")
    header = Text.assemble(("run ", "bold"), (run.run_id, "bold"), f"  preset {run.preset}  ",
                           (run.status, status_style), f"  {fmt_duration(span)}  {tally}")
    if run.shared_running and not any(row.phase == "shared" for row in run.phase_jobs):
        # A state written before shared jobs had rows of their own: name them at least.
        header.append(f"\nshared jobs running (the variants wait for them): "
                      f"{', '.join(run.shared_running)}", style="yellow")
    return Group(header, render_jobs(run.jobs, progress or {}, logs, now=now,
                                     phase_jobs=run.phase_jobs))


# ---------------------------------------------------------------------------- following files


class LogTail:
    """The last line of a growing log file, re-read only when the file grew."""

    window = 4096

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = -1
        self.line = ""

    def read(self) -> bool:
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if size == self.size:
            return False
        self.size = size
        try:
            with open(self.path, "rb") as handle:
                handle.seek(max(0, size - self.window))
                tail = handle.read(self.window).decode("utf-8", errors="replace")
        except OSError:
            return False
        for raw in reversed(tail.splitlines()):
            line = _ANSI.sub("", raw.split("\r")[-1] if raw.rstrip("\r") else raw).strip()
            if line:
                changed, self.line = line != self.line, line
                return changed
        return False


class JobFeed:
    """What the monitor follows for one job, shared job or gate: its events and its log's
    last line."""

    def __init__(self, job: st.JobState | st.PhaseJob) -> None:
        self.output_dir = job.output_dir
        self.progress = JobProgress()
        self.events = EventTail(job.events_path) if job.output_dir else None
        self.log = LogTail(Path(job.log_path)) if job.log_path else None
        self.closed = False  # read to the end after its job finished: nothing more comes

    def poll(self, *, final: bool = False) -> bool:
        """Read what was appended; ``final`` (its job has ended) reads the rest and closes."""
        if self.closed:
            return False
        changed = False
        if self.events is not None:
            changed = self.progress.apply_all(self.events.read(final=final))
            if self.events.bad_lines > self.progress.bad_lines:
                warn_corrupt(self.events.path, f"{self.events.bad_lines} unreadable line(s)",
                             "using the other lines")
            self.progress.bad_lines = self.events.bad_lines
        if self.log is not None:
            changed = self.log.read() or changed
        self.closed = final
        return changed


@dataclass
class _Seen:
    stage: str
    mark: int | None  # a job's epoch, a shared job's step
    printed: float


class LiveView:
    """Renders a run while someone else owns the loop: ``with LiveView(c) as v: v.update(run)``.

    In a terminal: a Rich Live display at 4 refreshes a second. Otherwise: one plain line
    per job when its stage changes, and when its epoch changes at most every
    ``plain_interval`` seconds.
    """

    def __init__(self, console: Console, *, live: bool | None = None,
                 plain_interval: float = 10.0) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.plain_interval = plain_interval
        self.feeds: dict[str, JobFeed] = {}
        self._live: Live | None = None
        self._seen: dict[str, _Seen] = {}

    def __enter__(self) -> LiveView:
        if self.live:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def poll(self, run: st.RunState) -> None:
        """Read what each job, shared job and gate appended since the last poll."""
        followed: list[st.PhaseJob | st.JobState] = [*run.phase_jobs, *run.jobs]
        for job in followed:
            feed = self.feeds.get(job.name)
            if feed is None or feed.output_dir != job.output_dir:
                feed = self.feeds[job.name] = JobFeed(job)
            feed.poll(final=job.stage.finished)

    @property
    def progress(self) -> dict[str, JobProgress]:
        return {name: feed.progress for name, feed in self.feeds.items()}

    @property
    def logs(self) -> dict[str, str]:
        return {name: feed.log.line for name, feed in self.feeds.items() if feed.log}

    def render(self, run: st.RunState, now: float | None = None) -> RenderableType:
        return render_run(run, self.progress, self.logs, now=now)

    def update(self, run: st.RunState, *, now: float | None = None) -> None:
        self.poll(run)
        if self._live is not None:
            self._live.update(self.render(run, now))
        elif not self.live:
            for line in self.plain_lines(run, now=now):
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def plain_lines(self, run: st.RunState, *, now: float | None = None) -> list[str]:
        """The lines worth printing since the last call (and remembers them as printed)."""
        now = time.time() if now is None else now
        out = []
        for row in run.phase_jobs:
            p = self._progress_of(row.name)
            if self._due(row.name, row.stage.value, p.step if p else None, now):
                out.append(phase_view.plain_line(row, p, now=now))
        for job in run.jobs:
            p = self._progress_of(job.name)
            if self._due(job.name, job.stage.value, p.epoch if p else None, now):
                out.append(plain_line(job, p, now=now))
        return out

    def _progress_of(self, name: str) -> JobProgress | None:
        return self.feeds[name].progress if name in self.feeds else None

    def _due(self, name: str, stage: str, mark: int | None, now: float) -> bool:
        """Whether a line is due for ``name`` (and then remembers it as printed): its stage
        changed, or its epoch (step) did at least ``plain_interval`` after the last line."""
        seen = self._seen.get(name)
        stage_changed = seen is None or seen.stage != stage
        mark_due = (seen is not None and mark != seen.mark
                    and now - seen.printed >= self.plain_interval)
        if stage_changed or mark_due:
            self._seen[name] = _Seen(stage, mark, now)
        return stage_changed or mark_due


def plain_line(job: st.JobState, p: JobProgress | None, *, now: float) -> str:
    parts = [time.strftime("%H:%M:%S", time.localtime(now)), job.name, job.stage.value]
    if job.stage in (st.Stage.failed, st.Stage.gate_failed, st.Stage.cancelled):
        return " ".join(parts) + f": {_reason(job, p)}"
    if job.gate is not None and job.stage in (st.Stage.gate_failed, st.Stage.queued):
        parts.append(f"gate {gate_summary(job.gate)}")
    if p is not None and p.epoch is not None:
        parts.append(f"epoch {p.epoch}/{p.epochs or '?'}")
        if p.step is not None:
            parts.append(f"step {p.step}/{p.total_steps or '?'}")
        parts.append(f"loss {fmt_loss(p.loss)}")
        if p.samples_per_s is not None:
            parts.append(f"{p.samples_per_s:.1f} samples/s")
        if job.stage == st.Stage.training:
            parts.append(f"ETA {fmt_duration(p.eta_at(now))}")
    elif job.device and job.stage == st.Stage.training:
        parts.append(f"on {job.device}")
    if job.retries and job.stage == st.Stage.training:
        parts.append(f"({job.retries[-1]})")
    return " ".join(parts)


# ---------------------------------------------------------------------------- the loop


@dataclass
class Watched:
    run: st.RunState | None
    detached: bool  # Ctrl-C: the view stopped, the jobs did not


def watch(target: Path, *, console: Console, until_done: bool = True, interval: float = 0.5,
          live: bool | None = None, once: bool = False) -> Watched:
    """Follow a run (its dir or its state.json) until it is over, or until Ctrl-C detaches.

    The state file is re-read only when it changes; a corrupt one gives a warning and the
    last good copy. ``once`` draws one frame and returns.
    """
    path = target / st.STATE_FILE if target.is_dir() else target
    if not path.exists():
        raise UsageError(f"no run state at {path}: is the run id right? (`orch status`)")
    run: st.RunState | None = None
    signature: tuple[int, int] | None = None
    view = LiveView(console, live=live)
    try:
        with view:
            while True:
                try:
                    stat = path.stat()
                except OSError:
                    stat = None  # between a rename and the next: keep the last good copy
                if stat is not None and (stat.st_mtime_ns, stat.st_size) != signature:
                    signature = (stat.st_mtime_ns, stat.st_size)
                    run = st.read_state_file(path) or run  # a corrupt file: a warning
                if run is None:
                    raise UsageError(f"cannot read run state {path}")
                current = st.refresh_liveness(run)
                view.update(current)
                if once or (until_done and current.status != st.RunStatus.running):
                    return Watched(current, detached=False)
                time.sleep(interval)
    except KeyboardInterrupt:
        return Watched(run, detached=True)
