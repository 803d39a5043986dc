"""The one module that owns Rich's consoles: output helpers, warnings, the job tables.

Library code never prints; it returns dataclasses or calls a callback, and the commands turn
those into output here. Output goes to stdout, errors and progress chatter to stderr, so
`orch status --json | jq` stays clean.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator.formats import GateResult, JobState, PhaseJob, RunState, Stage

if TYPE_CHECKING:
    from orchestrator.dryrun import DryRun
    from orchestrator.plan import Plan
    from orchestrator.report.pairs import PairDiff

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)
_warned: set[str] = set()

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


def write_raw(text: str) -> None:
    """Text exactly as it is (a job's log): no markup, no wrapping, flushed at once."""
    out.file.write(text)
    out.file.flush()


def error(message: str) -> None:
    # The message is text, not markup: `pip install 'orch[ray]'` must keep its brackets.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, markup=True,
              highlight=False)


def warn(message: str) -> None:
    """A warning on stderr, once per process however often it is raised (a monitor polls)."""
    if message in _warned:
        return
    _warned.add(message)
    err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True, markup=True,
              highlight=False)


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def show_library_warnings() -> None:
    """Print what orch's library logs (a corrupt file it reads past) as warning lines, each
    once for the command that starts now."""
    _warned.clear()
    logger = logging.getLogger("orchestrator")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
        logger.propagate = False


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


def fmt_duration(seconds: float | None) -> str:
    """4.2s, 1m05s, 2h03m: every duration orch shows."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def elapsed(job: JobState | PhaseJob, now: float | None = None) -> str:
    """How long the job has run (or ran), "" before it started."""
    if job.started is None:
        return ""
    end = job.finished if job.finished is not None else (now or time.time())
    return fmt_duration(max(0.0, end - job.started))


def jobs_table(run: RunState, now: float | None = None) -> Table:
    """A compact table of a run's jobs: what `status`, `train` and `run` print at the end."""
    t = Table(
        title=f"run {run.run_id}  preset {run.preset}  {run.status}",
        show_edge=False,
        header_style="bold",
    )
    for c in ("job", "stage", "device", "gate", "time", "reason"):
        t.add_column(c, overflow="fold" if c == "reason" else "ellipsis", no_wrap=c != "reason")
    # The shared jobs first, as they ran first (the gates are the jobs' gate column).
    for p in (p for p in run.phase_jobs if p.phase == "shared"):
        stage = "cached" if p.cached else p.stage.value
        style = "green" if p.cached else STAGE_STYLE.get(p.stage, "")
        t.add_row(p.name, f"[{style}]{stage}[/]" if style else stage, "", "",
                  elapsed(p, now), p.reason)
    for j in run.jobs:
        style = STAGE_STYLE.get(j.stage, "")
        t.add_row(
            j.name,
            f"[{style}]{j.stage.value}[/]" if style else j.stage.value,
            j.device,
            gate_summary(j.gate),
            elapsed(j, now),
            j.reason or (j.retries[-1] if j.retries else ""),
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


def fmt_memory(mb: float | None) -> str:
    if mb is None or not math.isfinite(mb):
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


# ---------------------------------------------------------------------------- live view cells

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """The last ``width`` values as block characters scaled between their min and max."""
    recent = list(values)[-width:]
    finite = [v for v in recent if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in recent:
        if not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(SPARK[3])
        else:
            out.append(SPARK[min(7, int((v - lo) / span * 7 + 0.5))])
    return "".join(out)


def bar(fraction: float, width: int = 14) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width + 1e-9)
    return "█" * full + "░" * (width - full)


def fmt_loss(loss: float | None) -> str:
    if loss is None:
        return "-"
    if not math.isfinite(loss):
        return "nan"
    return f"{loss:.4f}" if 1e-3 <= abs(loss) < 1e4 else f"{loss:.2e}"


def loss_cell(loss: float | None, recent: Sequence[float]) -> Text:
    """The latest loss above a sparkline of the recent ones."""
    if loss is None:
        return Text("-")
    return Text(f"{fmt_loss(loss)}\n") + Text(sparkline(recent), style="cyan")


def log_line(name: str, log: str, width: int) -> Text:
    """A job's last log line under the table, cut to the terminal's width."""
    line = Text(f"  {name:<{width}} │ ", style="dim") + Text(log)
    line.no_wrap, line.overflow = True, "ellipsis"
    return line


def _fmt_hours(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def plan_table(plan: Plan) -> Table:
    """Per job: micro-batch x accumulation, memory there (and how it is known), per clip,
    the other phases' floor where it sets the peak, the planned memory, GPU, note."""
    from orchestrator.plan import SUSTAINED_TFLOPS

    gpus = ", ".join(f"{g.index}:{fmt_memory(g.total_mb)}" for g in plan.inventory) or "none"
    t = Table(title=f"plan for {plan.preset} (measured on {plan.measured_on} in "
              f"{plan.precision}, {plan.memory_source}; GPUs {gpus}; times at "
              f"{SUSTAINED_TFLOPS:.0f} TFLOP/s sustained)", show_edge=False,
              header_style="bold")
    for c in ("variant", "micro x accum", "memory", "per clip", "other phases", "planned",
              "epoch", "evaluations", "run", "gpu", "note"):
        t.add_column(c)
    for j in plan.jobs:
        evaluations = _fmt_hours(j.evaluation_hours())
        if j.evaluation_precision and j.evaluation_hours() is not None:
            evaluations += f" ({j.evaluation_precision})"
        t.add_row(j.variant, f"{j.micro_batch} x {j.accumulation}",
                  f"{fmt_memory(j.memory_mb)} ({j.memory_basis})",
                  fmt_memory(j.per_clip_mb),
                  f"{fmt_memory(j.other_phases_mb)} (sets the peak)" if j.floor_dominates else "",
                  fmt_memory(j.planned_mb), _fmt_hours(j.epoch_hours()), evaluations,
                  _fmt_hours(j.run_hours()), ",".join(map(str, j.gpus)) or "-",
                  j.note if j.fits else f"[red]fits no GPU: {j.note}[/]")
    return t


def dry_run_view(plan: DryRun) -> RenderableType:
    """`--dry-run`: the shared jobs (cached or to run), the gates, then per job its device,
    memory, micro-batch, resume point and the exact command."""
    import shlex

    from rich.console import Group

    what = f"resume run {plan.run_id}" if plan.run_id else f"a new `orch {plan.command}`"
    memory_from = f"rehearsal plan ({plan.plan})" if plan.plan else "config estimates"
    parts: list[RenderableType] = [
        f"[bold]dry run[/]: {what}, preset {plan.preset}; memory from the {memory_from}; "
        "nothing was started"]
    shared = Table(title="shared jobs", show_edge=False, header_style="bold", title_justify="left")
    for c in ("job", "artifact", "state"):
        shared.add_column(c)
    for s in plan.shared:
        state = "[green]cached[/]" if s.cached else "[yellow]would run[/]"
        shared.add_row(s.name, s.artifact, state)
    if plan.shared:
        parts.append(shared)
    parts.append("gates to run: " + (", ".join(plan.gates) or "none (passed already)"))
    jobs = Table(title="training jobs", show_edge=False, header_style="bold",
                 title_justify="left")
    for c in ("job", "device", "threads", "memory", "micro-batch", "worktree", "resume"):
        jobs.add_column(c)
    for j in plan.jobs:
        memory = f"{fmt_memory(j.memory_mb)} ({j.memory_basis})" if j.memory_mb else "-"
        worktree = "ready" if j.worktree_ready else (
            "created by run" if plan.command == "run" else "[red]missing: orch spawn[/]")
        jobs.add_row(j.name, j.device, str(j.threads), memory,
                     str(j.micro_batch) if j.micro_batch else "whole batch", worktree,
                     j.resume or "-")
    parts.append(jobs)
    parts += [f"[bold]{j.name}[/]: {shlex.join(j.command)}" for j in plan.jobs]
    return Group(*parts)


# ---------------------------------------------------------------------------- orch diff

PATCH_STYLES = {"meta": "bold", "hunk": "cyan", "add": "green", "del": "red"}


def patch_text(patch: str) -> Text:
    """A unified diff, its added lines green, removed red, hunk headers cyan."""
    from orchestrator.report.code import patch_lines

    text = Text()
    for kind, line in patch_lines(patch):
        text.append(line + "\n", style=PATCH_STYLES.get(kind, ""))
    return text


def _plain_table(columns: Sequence[str], rows: Iterable[Sequence[str]],
                 right: Sequence[str] = ()) -> Table:
    """A table whose cells are shown as written (a file name may hold "[")."""
    t = Table(show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left")
    for r in rows:
        t.add_row(*(Text(c) for c in r))
    return t


def pair_view(pair: PairDiff, *, patch: bool = True) -> list[RenderableType]:
    """What `orch diff` prints: which code each side ran and the notes, the files, the
    params and the metrics tables, then (with ``patch``) the diffs themselves."""
    from orchestrator.report.pairs import (
        FILE_COLUMNS,
        code_line,
        file_cells,
        metric_cells,
        metric_columns,
        side_line,
    )
    from orchestrator.report.params import summary_sentence, table_cells

    parts: list[RenderableType] = [Text(pair.title, style="bold"), Text(side_line(pair.a)),
                                   Text(side_line(pair.b))]
    parts += [Text.assemble(("note: ", "yellow"), note) for note in pair.notes]
    codes = [(code, what) for code, what in ((pair.code, "commits"),
                                             (pair.folders, "variant folders")) if code]
    for code, what in codes:
        parts.append(Text(code_line(code, what), style="red" if code.error else ""))
        if code.files:
            parts.append(_plain_table(FILE_COLUMNS, file_cells(code), right=("+", "-")))
    if pair.params.columns:
        parts.append(Text(summary_sentence(pair.params, "both")))
        if pair.params.rows:
            parts.append(_plain_table(("key", *pair.params.columns), table_cells(pair.params)))
    if pair.metrics:
        columns = metric_columns(pair)
        parts.append(_plain_table(columns, metric_cells(pair), right=columns[1:5]))
    if patch:
        from rich.rule import Rule

        for code, what in codes:
            if code.patch:
                parts += [Rule(f"diff of the {what}"), patch_text(code.patch)]
        for job, text in pair.uncommitted.items():
            parts += [Rule(f"uncommitted changes {job} ran with"), patch_text(text)]
    return parts


def page(parts: Sequence[RenderableType], *, pager: bool = True) -> None:
    """Print ``parts``; through the pager, colours kept, when ``pager`` and stdout is a
    terminal. Long diff lines are never cut: a pager scrolls sideways."""
    import os

    def show() -> None:
        for part in parts:
            out.print(part, soft_wrap=isinstance(part, Text))

    if not (pager and out.is_terminal):
        show()
        return
    # As git does: less passes the colours through, and quits when all fits one screen.
    os.environ.setdefault("LESS", "FRX")
    with out.pager(styles=True):
        show()
