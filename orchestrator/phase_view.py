"""The live view's rows for the phases before training: one per shared job and per gate.

A shared job's row reads like a training job's: its step against its budget (where the
clock ends the job rather than a step cap, the total is the job's own running estimate),
its loss with a sparkline, the held-out figure it reports at the end (the tokenizer's PSNR,
a motion backbone's accuracy) and its ETA; a cached one says so. A gate's row shows how far
pytest has got (the percentage `pytest -q` prints), then its counts of passed and failed
tests. Pure functions of the run state, the events and the last log lines, like ``monitor``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence

from rich.table import Table
from rich.text import Text

from orchestrator.formats import PhaseJob, Stage
from orchestrator.progress import JobProgress
from orchestrator.ui import (
    STAGE_STYLE,
    bar,
    fmt_duration,
    fmt_loss,
    fmt_memory,
    gate_summary,
    log_line,
    loss_cell,
)

PYTEST_PERCENT = re.compile(r"\[\s*(\d{1,3})%\]$")


def stage_label(row: PhaseJob) -> str:
    if row.cached:
        return "cached"
    if row.phase == "gate":
        return {Stage.done: "passed", Stage.gate_failed: "failed"}.get(row.stage, row.stage.value)
    return "running" if row.stage == Stage.training else row.stage.value


def held_out(p: JobProgress | None) -> str:
    """What a shared job reported on its held-out clips: PSNR where it has one, else its
    first figure; "" before it has evaluated."""
    if p is None or p.last_eval is None or not p.last_eval.metrics:
        return ""
    metrics = p.last_eval.metrics
    name = "psnr" if "psnr" in metrics else next(iter(metrics))
    value = metrics[name]
    if not math.isfinite(value):
        return ""
    return f"PSNR {value:.2f} dB" if name == "psnr" else f"{name} {value:.3g}"


def fraction_done(row: PhaseJob, p: JobProgress | None) -> float | None:
    if row.stage == Stage.done:
        return 1.0
    if p is None or p.step is None or not p.total_steps:
        return None
    return min(1.0, p.step / p.total_steps)


def gate_percent(log: str) -> int | None:
    """How far `pytest -q` has got, from the percentage that ends its progress lines."""
    match = PYTEST_PERCENT.search(log)
    return min(100, int(match.group(1))) if match else None


def _progress_cell(row: PhaseJob, p: JobProgress | None, log: str, now: float) -> Text:
    if row.phase == "gate":
        if row.gate is not None:
            return Text(gate_summary(row.gate))
        percent = gate_percent(log) if row.stage == Stage.gating else None
        if percent is not None:
            return Text(f"{bar(percent / 100)} {percent:3d}%")
        return Text("tests running" if row.stage == Stage.gating else "")
    figure = held_out(p)
    if row.cached:
        return Text("artifact of an earlier run" + (f" · {figure}" if figure else ""),
                    style="dim")
    frac = fraction_done(row, p)
    if frac is None:  # no progress event yet (or a job that writes none)
        return Text({Stage.queued: "waiting for a core", Stage.training: "running"}.get(
            row.stage, ""))
    text = Text(f"{bar(frac)} {frac * 100:3.0f}%")
    detail = [_steps(row, p)] if p is not None and p.step is not None else []
    if figure:
        detail.append(figure)
    if p is not None and row.stage == Stage.training:
        detail.append(f"ETA {fmt_duration(p.eta_at(now))}")
    if detail:
        text.append("\n" + " · ".join(detail), style="dim")
    return text


def _steps(row: PhaseJob, p: JobProgress) -> str:
    # A finished job's count is what it took; a running one's total may be an estimate.
    if row.stage == Stage.done:
        return f"{p.step or 0} steps"
    return f"step {p.step or 0}/{p.total_steps or '?'}"


def _elapsed(row: PhaseJob, now: float) -> str:
    if row.started is None:
        return "-"
    return fmt_duration(max(0.0, (row.finished or now) - row.started))


def add_rows(table: Table, rows: Sequence[PhaseJob], progress: Mapping[str, JobProgress],
             logs: Mapping[str, str], *, now: float, width: int) -> tuple[list[Text], list[Text]]:
    """Add a row per shared job and gate to the jobs ``table``; returns the notes to print
    under it: (failures and cancellations, last log lines of the running shared jobs). A
    failed gate's reason is left to its variant's rows, which show it already."""
    failures: list[Text] = []
    tails: list[Text] = []
    for row in rows:
        p = progress.get(row.name)
        log = logs.get(row.name, "")
        style = "green" if row.cached else STAGE_STYLE.get(row.stage, "")
        device = p.start.device if p and p.start and p.start.device else (
            "cpu" if row.phase == "gate" else "-")
        table.add_row(
            Text(row.name, style="bold"), Text(stage_label(row), style=style), device,
            _progress_cell(row, p, log, now),
            loss_cell(p.loss, p.losses) if p else loss_cell(None, ()),
            f"{p.samples_per_s:.1f}" if p and p.samples_per_s is not None else "-",
            fmt_memory(p.memory_mb if p else None), _elapsed(row, now),
        )
        if row.phase == "shared" and row.stage == Stage.failed:
            failures.append(Text(f"✗ {row.name} failed: {row.reason or 'no reason recorded'}",
                                 style="bold red"))
            if log:
                failures.append(log_line(row.name, log, width))
        elif row.stage == Stage.cancelled and row.reason and row.phase == "shared":
            failures.append(Text(f"- {row.name} cancelled: {row.reason}", style="magenta"))
        elif row.phase == "shared" and log and not row.stage.finished:
            tails.append(log_line(row.name, log, width))
    return failures, tails


def plain_line(row: PhaseJob, p: JobProgress | None, *, now: float) -> str:
    """One line for the plain (non-terminal) view: what changed in a shared job or gate."""
    parts = [time.strftime("%H:%M:%S", time.localtime(now)), row.name, stage_label(row)]
    if row.stage in (Stage.failed, Stage.gate_failed, Stage.cancelled) and row.reason:
        return " ".join(parts) + f": {row.reason}"
    if row.gate is not None:
        parts.append(gate_summary(row.gate))
    if p is not None and p.step is not None and not row.cached:
        parts += [_steps(row, p), f"loss {fmt_loss(p.loss)}"]
        if row.stage == Stage.training:
            parts.append(f"ETA {fmt_duration(p.eta_at(now))}")
    if figure := held_out(p):
        parts.append(figure)
    if row.started is not None and row.stage.finished and not row.cached:
        parts.append(f"in {_elapsed(row, now)}")
    return " ".join(parts)
