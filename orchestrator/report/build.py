"""Merging: every job of a run into records, a summary per variant and the reference rows.

``build_report(run_dir)`` reads the run state (provenance, gate outcomes, failures) and each
job's results.json and events.jsonl, and returns a ``Report``: one ``JobRow`` per job, one
``VariantSummary`` per variant (mean and 95% Student-t interval over seeds), and the
reference rows a model must beat. It writes nothing; the views (markdown, HTML, terminal,
``--json``) render these same records.

Honesty rules: variants are ranked by PSNR, but a variant that scores below its black or
copy-last reference is flagged in every view; failed jobs and unreadable results stay
visible as rows and warnings instead of silently dropping out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from orchestrator import state as st
from orchestrator.formats import (
    REFERENCE_ROWS,
    CorruptFile,
    EpochStats,
    Results,
    TestOutcome,
    collect_warnings,
    jsonable,
    load_results,
    log,
    warn_corrupt,
)
from orchestrator.progress import read_progress
from orchestrator.report.stats import Interval, mean_interval

REFERENCE_LABELS = {"black": "black", "copy_last": "copy-last", "oracle": "oracle"}

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class JobRow:
    """One job of the run: its provenance, gate, status and (when it finished) its results."""

    name: str
    variant: str
    seed: int
    preset: str
    status: str  # the job's stage (done, failed, ...) or "unreadable" / "no results"
    reason: str
    branch: str
    commit: str
    dirty: bool
    diff_path: str
    gate_passed: bool | None
    gate_tests: tuple[TestOutcome, ...]
    metrics: dict[str, dict[str, float]]  # "model" and reference rows -> metric -> value
    per_frame_psnr: dict[str, tuple[float, ...]]
    trainable: int | None
    frozen: int | None
    wall_s: float | None
    samples_per_s: float | None
    peak_memory_mb: float | None
    environment: dict[str, Any]
    history: tuple[EpochStats, ...]
    step_losses: tuple[tuple[int, float], ...]
    frames_path: str
    results_path: str
    flags: tuple[str, ...]

    @property
    def has_results(self) -> bool:
        return "model" in self.metrics


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    rank: int | None  # by mean PSNR; None without results
    seeds: tuple[int, ...]
    psnr: Interval
    ssim: Interval
    mse: Interval
    mae: Interval
    references: dict[str, dict[str, float]]  # this variant's reference rows, seed means
    gate: str
    trainable: int | None
    frozen: int | None
    wall_s: float | None
    samples_per_s: float | None
    status: str  # "ok", or why there are no numbers
    flags: tuple[str, ...]


@dataclass(frozen=True)
class ReferenceRow:
    """A row a model must beat; ``scope`` is None when every job has the same values."""

    name: str
    scope: str | None
    metrics: dict[str, float]
    per_frame_psnr: tuple[float, ...]

    @property
    def label(self) -> str:
        base = REFERENCE_LABELS.get(self.name, self.name)
        return base if self.scope is None else f"{base} ({self.scope})"


@dataclass
class Report:
    run_id: str
    preset: str
    status: str
    rows: list[JobRow]
    variants: list[VariantSummary]
    references: list[ReferenceRow]
    warnings: list[str] = field(default_factory=list)
    markdown_path: Path | None = None
    html_path: Path | None = None

    @property
    def has_results(self) -> bool:
        return any(row.has_results for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null), the data every view renders."""
        data: dict[str, Any] = jsonable(TypeAdapter(Report).dump_python(self, mode="json"))
        for ref, raw in zip(self.references, data["references"], strict=True):
            raw["label"] = ref.label
        return data


# ---------------------------------------------------------------------------- merging


def _metric_dict(results: Results) -> dict[str, dict[str, float]]:
    return {row: {"mse": m.mse, "mae": m.mae, "psnr": m.psnr, "ssim": m.ssim}
            for row, m in results.final.items()}


def _flags(model: dict[str, float], refs: dict[str, dict[str, float]]) -> tuple[str, ...]:
    psnr = model.get("psnr", math.nan)
    return tuple(f"below {REFERENCE_LABELS[name]}" for name in ("copy_last", "black")
                 if name in refs and psnr < refs[name].get("psnr", math.nan))


def _retried(job: st.JobState) -> tuple[str, ...]:
    """A job that ran out of memory and went again with smaller micro-batches says so."""
    if not job.retries:
        return ()
    return (f"OOM: retried down to micro-batch {job.micro_batch}",)


def _jobs_without_state(run_dir: Path) -> list[st.JobState]:
    """A run dir without state.json (copied around, or written by hand): its results files."""
    jobs = []
    for path in sorted(run_dir.rglob("results.json")):
        name = path.parent.name
        jobs.append(st.JobState(variant=name, name=name, stage=st.Stage.done,
                                output_dir=str(path.parent)))
    return jobs


def _job_row(job: st.JobState) -> JobRow:
    results: Results | None = None
    status, reason = job.stage.value, job.reason
    if job.output_dir and job.results_path.exists():
        try:
            results = load_results(job.results_path)
        except CorruptFile as error:
            warn_corrupt(error.path, error.reason, "the job is shown without results")
            status, reason = "unreadable", error.reason
    elif job.stage == st.Stage.done:
        log.warning(f"{job.name}: finished but wrote no results.json in {job.output_dir}")
        status, reason = "no results", "results.json missing"
    progress = read_progress(job.events_path) if job.output_dir else None
    if not reason and progress is not None and progress.error is not None:
        reason = progress.error.message
    gate = job.gate
    metrics = _metric_dict(results) if results else {}
    refs = {k: v for k, v in metrics.items() if k != "model"}
    frames = results.artifact("frames") if results else None
    variant = job.variant
    if results is not None and not job.branch:  # no run state: the results name the job
        variant = results.variant
    return JobRow(
        name=job.name, variant=variant, seed=results.seed if results else job.seed,
        preset=results.preset if results else job.preset, status=status, reason=reason,
        branch=job.branch, commit=job.commit, dirty=job.dirty, diff_path=job.diff_path,
        gate_passed=None if gate is None else gate.passed,
        gate_tests=tuple(gate.tests if gate else ()),
        metrics=metrics,
        per_frame_psnr={row: m.per_frame.get("psnr", ()) for row, m in results.final.items()}
        if results else {},
        trainable=results.trainable if results else None,
        frozen=results.frozen if results else None,
        wall_s=results.timings.wall_s if results else None,
        samples_per_s=results.timings.samples_per_s if results else None,
        peak_memory_mb=results.timings.peak_memory_mb if results else None,
        environment=results.environment.model_dump() if results else {},
        history=results.history if results else (),
        step_losses=tuple(progress.step_losses) if progress else (),
        frames_path=str(frames) if frames and frames.exists() else "",
        results_path=str(results.path) if results else "",
        flags=(_flags(metrics["model"], refs) if results else ()) + _retried(job),
    )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_metrics(rows: Sequence[JobRow], name: str) -> dict[str, float]:
    return {m: _mean([r.metrics[name][m] for r in rows]) for m in ("psnr", "ssim", "mse", "mae")}


def _gate_text(rows: Sequence[JobRow]) -> str:
    gated = [r for r in rows if r.gate_passed is not None]
    if not gated:
        return "-"
    tests = gated[0].gate_tests
    passed = sum(t.outcome == "passed" for t in tests)
    return f"{'ok' if gated[0].gate_passed else 'FAIL'} {passed}/{len(tests)}"


def _summaries(rows: list[JobRow]) -> list[VariantSummary]:
    by_variant: dict[str, list[JobRow]] = {}
    for row in rows:
        by_variant.setdefault(row.variant, []).append(row)
    out = []
    for variant, jobs in by_variant.items():
        ok = [r for r in jobs if r.has_results]
        refs = {name: _mean_metrics(ok, name) for name in REFERENCE_ROWS} if ok else {}
        model = {m: mean_interval([r.metrics["model"][m] for r in ok])
                 for m in ("psnr", "ssim", "mse", "mae")}
        failed = [r for r in jobs if not r.has_results]
        status = "ok" if ok else (failed[0].status + (f": {failed[0].reason}"
                                                      if failed[0].reason else ""))
        flags = _flags({"psnr": model["psnr"].mean}, refs) if ok else ()
        flags += tuple(dict.fromkeys(f for r in jobs for f in r.flags if f.startswith("OOM")))
        if ok and failed:
            flags += (f"{len(failed)} of {len(jobs)} jobs without results",)
        out.append(VariantSummary(
            variant=variant, rank=None, seeds=tuple(sorted(r.seed for r in ok)),
            psnr=model["psnr"], ssim=model["ssim"], mse=model["mse"], mae=model["mae"],
            references=refs, gate=_gate_text(jobs),
            trainable=ok[0].trainable if ok else None, frozen=ok[0].frozen if ok else None,
            wall_s=_mean([r.wall_s for r in ok if r.wall_s is not None]) if ok else None,
            samples_per_s=_mean([r.samples_per_s for r in ok if r.samples_per_s is not None])
            if ok else None,
            status=status, flags=flags,
        ))

    def key(s: VariantSummary) -> tuple[int, float]:
        psnr = s.psnr.mean
        return (0, -psnr) if s.psnr.n and not math.isnan(psnr) else (1, 0.0)

    out.sort(key=key)
    return [replace(s, rank=i + 1) if s.psnr.n else s for i, s in enumerate(out)]


def _same(values: list[dict[str, float]]) -> bool:
    first = values[0]
    return all(math.isclose(v[m], first[m], rel_tol=1e-9, abs_tol=1e-12) or
               (math.isnan(v[m]) and math.isnan(first[m])) for v in values for m in first)


def _references(rows: list[JobRow], variants: list[VariantSummary]) -> list[ReferenceRow]:
    """One row per reference if all jobs agree (same clips), else one per variant."""
    ok = [r for r in rows if r.has_results]
    out = []
    for name in REFERENCE_ROWS:
        if not ok:
            break
        if _same([r.metrics[name] for r in ok]):
            out.append(ReferenceRow(name, None, dict(ok[0].metrics[name]),
                                    ok[0].per_frame_psnr.get(name, ())))
            continue
        for summary in variants:
            mine = [r for r in ok if r.variant == summary.variant]
            if mine:
                out.append(ReferenceRow(name, summary.variant, summary.references[name],
                                        mean_curve([r.per_frame_psnr.get(name, ())
                                                      for r in mine])))
    return out


def mean_curve(curves: Sequence[Sequence[float]]) -> tuple[float, ...]:
    curves = [c for c in curves if c]
    if not curves:
        return ()
    length = min(len(c) for c in curves)
    return tuple(_mean([c[i] for c in curves]) for i in range(length))


def latest_run_with_results(home: Path) -> str | None:
    """The newest run with at least one results.json (a later gate-only run has none),
    else the newest run."""
    for run_id in reversed(st.list_runs(home)):
        run = st.read_state_file(st.state_path(home, run_id), warn=False)
        if run is not None and any(job.results_path.exists() for job in run.jobs
                                   if job.output_dir):
            return run_id
    return st.latest_run_id(home)


def build_report(run_dir: Path) -> Report:
    """Merge a run's jobs into a Report; writes nothing. Unreadable files become warnings
    (the same lines the ``orchestrator`` logger carries); nothing here raises for them."""
    with collect_warnings() as warnings:
        run = st.read_state_file(run_dir / st.STATE_FILE)
        if run is not None:
            run = st.refresh_liveness(run)
            jobs = run.jobs
        else:
            jobs = _jobs_without_state(run_dir)
        rows = [_job_row(job) for job in jobs]
    variants = _summaries(rows)
    return Report(
        run_id=run.run_id if run else run_dir.name,
        preset=run.preset if run else ", ".join(sorted({r.preset for r in rows})),
        status=run.status.value if run else "unknown",
        rows=rows, variants=variants, references=_references(rows, variants),
        warnings=warnings,
    )
