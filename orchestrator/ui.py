"""The one module that owns Rich: consoles, output helpers and the live job view.

Library code never prints; it returns dataclasses or calls a callback, and the commands turn
those into output here. Output goes to stdout, errors and progress chatter to stderr, so
`orch status --json | jq` stays clean.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table

from orchestrator.state import GateResult, JobState, RunState, Stage

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)

STAGE_STYLE = {
    Stage.pending: "dim",
    Stage.spawned: "dim",
    Stage.gating: "yellow",
    Stage.gate_failed: "red",
    Stage.queued: "cyan",
    Stage.training: "yellow",
    Stage.done: "green",
    Stage.failed: "red",
    Stage.cancelled: "magenta",
}


def write(message: RenderableType = "", **kwargs: Any) -> None:
    out.print(message, **kwargs)


def info(message: str) -> None:
    """Progress chatter: to stderr, so stdout stays for results."""
    err.print(message)


def write_json(data: Any) -> None:
    # Plain print through the console's file: no wrapping or markup inside JSON.
    out.file.write(json.dumps(data, indent=2, default=str) + "\n")
    out.file.flush()


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> Table:
    t = Table(title=title, show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*(str(x) if not isinstance(x, Table) else x for x in r))
    return t


def is_terminal() -> bool:
    return err.is_terminal


# ---------------------------------------------------------------------------- job table


def gate_summary(gate: GateResult | None) -> str:
    if gate is None:
        return ""
    c = gate.counts
    total = len(gate.tests)
    text = f"{c['passed']}/{total} passed"
    bad = [f"{c[k]} {k}" for k in ("failed", "error") if c[k]]
    return text + (" (" + ", ".join(bad) + ")" if bad else "")


def elapsed(job: JobState, now: float | None = None) -> str:
    if job.started is None:
        return ""
    end = job.finished if job.finished is not None else (now or time.time())
    s = max(0, int(end - job.started))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def jobs_table(run: RunState, now: float | None = None) -> Table:
    """A compact table of a run's jobs; the fallback when the monitor's renderer is absent."""
    t = Table(
        title=f"run {run.run_id}  preset {run.preset}  {run.status}",
        show_edge=False,
        header_style="bold",
    )
    for c in ("job", "stage", "device", "gate", "time", "reason"):
        t.add_column(c, overflow="fold" if c == "reason" else "ellipsis", no_wrap=c != "reason")
    for j in run.jobs:
        style = STAGE_STYLE.get(j.stage, "")
        t.add_row(
            j.name,
            f"[{style}]{j.stage.value}[/]" if style else j.stage.value,
            j.device,
            gate_summary(j.gate),
            elapsed(j, now),
            j.reason,
        )
    return t


def gate_table(run: RunState) -> Table:
    """Every gate test of every job: the per-test outcomes from junit XML."""
    t = Table(show_edge=False, header_style="bold")
    for c in ("variant", "test", "outcome", "seconds", "message"):
        t.add_column(c)
    style = {"passed": "green", "failed": "red", "error": "red", "skipped": "dim"}
    seen: set[str] = set()
    for j in run.jobs:
        if j.gate is None or j.variant in seen:
            continue
        seen.add(j.variant)
        for test in j.gate.tests:
            t.add_row(
                j.variant,
                test.name,
                f"[{style[test.outcome]}]{test.outcome}[/]",
                f"{test.seconds:.2f}",
                test.message[:80],
            )
    return t


def _monitor_view(live: bool) -> Any:
    """The monitor's LiveView (progress, loss, log lines) if that module provides one."""
    try:
        monitor = importlib.import_module("orchestrator.monitor")
    except ImportError:
        return None
    view = getattr(monitor, "LiveView", None)
    return view(err, live=live) if view is not None else None


@dataclass
class JobsView:
    """The live view of a run while orch drives it.

    The monitor module's LiveView renders it when present (the same view as `orch monitor`);
    else, in a terminal, a Rich Live table refreshed on updates, and elsewhere (CI, a pipe)
    one plain line per job whenever its stage changes.
    """

    live: bool | None = None  # None: decide from whether stderr is a terminal
    _live: Live | None = None
    _delegate: Any = None
    _seen: dict[str, str] = field(default_factory=dict)
    _render: Callable[[RunState], RenderableType] = jobs_table
    _last: float = 0.0

    def __enter__(self) -> JobsView:
        if self.live is None:
            self.live = is_terminal()
        self._delegate = _monitor_view(self.live)
        if self._delegate is not None:
            self._delegate.__enter__()
        elif self.live:
            self._live = Live(console=err, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._delegate is not None:
            self._delegate.__exit__(exc_type, exc, tb)
            self._delegate = None
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def update(self, run: RunState) -> None:
        if self._delegate is not None:
            self._delegate.update(run)
            return
        if self._live is not None:
            now = time.monotonic()
            # The launcher calls this often; rendering is throttled to keep the view cheap.
            if now - self._last >= 0.25 or any(
                self._seen.get(j.name) != j.stage.value for j in run.jobs
            ):
                self._last = now
                self._seen = {j.name: j.stage.value for j in run.jobs}
                self._live.update(self._render(run), refresh=True)
            return
        for j in run.jobs:
            key = j.stage.value
            if self._seen.get(j.name) == key:
                continue
            self._seen[j.name] = key
            extra = f" on {j.device}" if j.stage == Stage.training and j.device else ""
            if j.gate is not None and j.stage in (Stage.gate_failed, Stage.queued):
                extra += f" gate {gate_summary(j.gate)}"
            if j.reason:
                extra += f": {j.reason}"
            info(f"{time.strftime('%H:%M:%S')} {j.name}: {key}{extra}")
