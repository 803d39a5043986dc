"""The comparison report: every job of a run merged into records, report.md and report.html.

``build_report(run_dir)`` reads the run state (provenance, gate outcomes, failures) and each
job's results.json and events.jsonl, and returns a ``Report``: one ``JobRow`` per job, one
``VariantSummary`` per variant (mean and 95% Student-t interval over seeds), and the
reference rows a model must beat. The same records feed the terminal table, the markdown,
the HTML and ``--json``.

Honesty rules: variants are ranked by PSNR, but a variant that scores below its black or
copy-last reference is flagged in every view; failed jobs and unreadable results stay
visible as rows and warnings instead of silently dropping out.

report.html is a single self-contained file: inline CSS, hand-drawn SVG charts and the frame
strips as base64 data URIs, so it can be mailed or archived with nothing external.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import state as st
from orchestrator.results import (
    REFERENCE_ROWS,
    EpochStats,
    InvalidFile,
    Results,
    load_results,
    read_progress,
)

REFERENCE_LABELS = {"black": "black", "copy_last": "copy-last", "oracle": "oracle"}
MAX_DIFF_CHARS = 200_000
MAX_IMAGE_BYTES = 8 << 20

# Two-sided 95% Student t quantiles t_{0.975, df}, for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# Beyond 30: anchors interpolated linearly in 1/df (exact to the third decimal).
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return _T975[df - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:], strict=False):
        if df <= d1:
            x0, x1, x = 1 / d0, (0.0 if d1 == math.inf else 1 / d1), 1 / df
            return t0 + (t1 - t0) * (x0 - x) / (x0 - x1)
    return 1.960


@dataclass(frozen=True)
class Interval:
    """Mean of n values and the half width of its 95% interval (None when n < 2)."""

    mean: float
    half_width: float | None
    n: int

    def format(self, digits: int) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        text = f"{self.mean:.{digits}f}"
        if self.half_width is not None and not math.isnan(self.half_width):
            text += f" ± {self.half_width:.{digits}f}"
        return text


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean ± t_{0.975,n-1} * s / sqrt(n), with s the sample standard deviation."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, None, 0)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, None, 1)
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t975(n - 1) * s / math.sqrt(n), n)


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GateTest:
    name: str
    outcome: str
    seconds: float
    message: str


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
    gate_tests: tuple[GateTest, ...]
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
        data = asdict(self)
        data["markdown_path"] = str(self.markdown_path) if self.markdown_path else None
        data["html_path"] = str(self.html_path) if self.html_path else None
        for ref, raw in zip(self.references, data["references"], strict=True):
            raw["label"] = ref.label
        return _finite(data)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------- merging


def _metric_dict(results: Results) -> dict[str, dict[str, float]]:
    return {row: {"mse": m.mse, "mae": m.mae, "psnr": m.psnr, "ssim": m.ssim}
            for row, m in results.final.items()}


def _flags(model: dict[str, float], refs: dict[str, dict[str, float]]) -> tuple[str, ...]:
    psnr = model.get("psnr", math.nan)
    return tuple(f"below {REFERENCE_LABELS[name]}" for name in ("copy_last", "black")
                 if name in refs and psnr < refs[name].get("psnr", math.nan))


def _jobs_without_state(run_dir: Path) -> list[st.JobState]:
    """A run dir without state.json (copied around, or written by hand): its results files."""
    jobs = []
    for path in sorted(run_dir.rglob("results.json")):
        name = path.parent.name
        jobs.append(st.JobState(variant=name, name=name, stage=st.Stage.done,
                                output_dir=str(path.parent)))
    return jobs


def _job_row(job: st.JobState, warnings: list[str]) -> JobRow:
    results: Results | None = None
    status, reason = job.stage.value, job.reason
    if job.output_dir and job.results_path.exists():
        try:
            results = load_results(job.results_path)
        except InvalidFile as error:
            warnings.append(f"skipped {error.path}: {error.reason}")
            status, reason = "unreadable", error.reason
    elif job.stage == st.Stage.done:
        warnings.append(f"{job.name}: finished but wrote no results.json in {job.output_dir}")
        status, reason = "no results", "results.json missing"
    progress = read_progress(job.events_path) if job.output_dir else None
    if progress is not None and progress.bad_lines:
        warnings.append(f"{job.events_path}: skipped {progress.bad_lines} unreadable line(s)")
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
        gate_tests=tuple(GateTest(t.name, t.outcome, t.seconds, t.message)
                         for t in (gate.tests if gate else [])),
        metrics=metrics,
        per_frame_psnr={row: m.per_frame.get("psnr", ()) for row, m in results.final.items()}
        if results else {},
        trainable=results.trainable if results else None,
        frozen=results.frozen if results else None,
        wall_s=results.timings.wall_s if results else None,
        samples_per_s=results.timings.samples_per_s if results else None,
        peak_memory_mb=results.timings.peak_memory_mb if results else None,
        environment=asdict(results.environment) if results else {},
        history=results.history if results else (),
        step_losses=tuple(progress.step_losses) if progress else (),
        frames_path=str(frames) if frames and frames.exists() else "",
        results_path=str(results.path) if results else "",
        flags=_flags(metrics["model"], refs) if results else (),
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
                                        _mean_curves([r.per_frame_psnr.get(name, ())
                                                      for r in mine])))
    return out


def _mean_curves(curves: Sequence[Sequence[float]]) -> tuple[float, ...]:
    curves = [c for c in curves if c]
    if not curves:
        return ()
    length = min(len(c) for c in curves)
    return tuple(_mean([c[i] for c in curves]) for i in range(length))


def latest_run_with_results(home: Path) -> str | None:
    """The newest run with at least one results.json (a later gate-only run has none),
    else the newest run."""
    runs = st.list_runs(home)
    for run_id in reversed(runs):
        try:
            run = st.load_run(home, run_id)
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if run is not None and any(job.results_path.exists() for job in run.jobs
                                   if job.output_dir):
            return run_id
    return st.latest_run_id(home)


def build_report(run_dir: Path, *, out_dir: Path | None = None, write: bool = True) -> Report:
    """Merge a run's jobs into a Report and write report.md and report.html to ``out_dir``
    (default: the run dir). Unreadable files become warnings; nothing here raises for them."""
    warnings: list[str] = []
    state_file = run_dir / st.STATE_FILE
    run: st.RunState | None = None
    if state_file.exists():
        try:
            run = st.run_from_dict(json.loads(state_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError) as error:
            warnings.append(f"skipped {state_file}: {error}; using the results files alone")
    if run is not None:
        run = st.refresh_liveness(run)
        jobs = run.jobs
    else:
        jobs = _jobs_without_state(run_dir)
    rows = [_job_row(job, warnings) for job in jobs]
    variants = _summaries(rows)
    report = Report(
        run_id=run.run_id if run else run_dir.name,
        preset=run.preset if run else ", ".join(sorted({r.preset for r in rows})),
        status=run.status if run else "unknown",
        rows=rows, variants=variants, references=_references(rows, variants),
        warnings=warnings,
    )
    if write and report.has_results:
        out_dir = out_dir or run_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        report.markdown_path = out_dir / "report.md"
        report.html_path = out_dir / "report.html"
        st.write_atomic(report.markdown_path, render_markdown(report, out_dir))
        st.write_atomic(report.html_path, render_html(report))
    return report


# ---------------------------------------------------------------------------- tables

DIGITS = {"psnr": 2, "ssim": 3, "mse": 1, "mae": 1}
TABLE_COLUMNS = ("#", "variant", "seed", "PSNR", "SSIM", "MSE", "MAE", "gate", "params",
                 "wall", "samp/s", "note")
MAX_NOTE = 48


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _short_count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_params(trainable: int | None, frozen: int | None) -> str:
    """Trainable / total parameter counts."""
    if trainable is None:
        return "-"
    return f"{_short_count(trainable)}/{_short_count(trainable + (frozen or 0))}"


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{seconds:.1f}s"


def _note(text: str) -> str:
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 1] + "…"


def flag_lines(report: Report) -> list[str]:
    """One sentence per variant that lost to a reference row, with the numbers."""
    lines = []
    for s in report.variants:
        for name in ("copy_last", "black"):
            ref = s.references.get(name, {}).get("psnr", math.nan)
            if f"below {REFERENCE_LABELS[name]}" in s.flags:
                lines.append(f"{s.variant} scores below {REFERENCE_LABELS[name]}: PSNR "
                             f"{s.psnr.format(2)} vs {ref:.2f}")
    return lines


def table_rows(report: Report) -> list[tuple[str, list[str]]]:
    """The comparison table as (kind, cells): kind is "variant", "seed" or "reference".

    Variants in rank order, each followed by its seeds when there are several; then the
    reference rows (marked "ref" in the first column). The terminal and the markdown render
    these same cells; full failure reasons are in the warnings and the provenance.
    """
    out: list[tuple[str, list[str]]] = []
    for s in report.variants:
        seeds = (f"n={len(s.seeds)}" if len(s.seeds) > 1 else
                 str(s.seeds[0]) if s.seeds else "-")
        note = "; ".join(s.flags) if s.status == "ok" else s.status
        out.append(("variant", [
            str(s.rank) if s.rank else "-", s.variant, seeds,
            *(getattr(s, m).format(DIGITS[m]) for m in ("psnr", "ssim", "mse", "mae")),
            s.gate, fmt_params(s.trainable, s.frozen), fmt_seconds(s.wall_s),
            fmt(s.samples_per_s, 1), _note(note),
        ]))
        jobs = [r for r in report.rows if r.variant == s.variant]
        if len(jobs) > 1:
            for r in sorted(jobs, key=lambda r: r.seed):
                m = r.metrics.get("model", {})
                note = "; ".join(r.flags) if r.has_results else (
                    r.status + (f": {r.reason}" if r.reason else ""))
                out.append(("seed", [
                    "", r.variant, str(r.seed),
                    *(fmt(m.get(k), DIGITS[k]) for k in ("psnr", "ssim", "mse", "mae")),
                    "", "", fmt_seconds(r.wall_s), fmt(r.samples_per_s, 1), _note(note),
                ]))
    for ref in report.references:
        out.append(("reference", [
            "ref", ref.label, "", *(fmt(ref.metrics.get(k), DIGITS[k])
                                    for k in ("psnr", "ssim", "mse", "mae")),
            "", "", "", "", "",
        ]))
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return lines


def _rel(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def render_markdown(report: Report, out_dir: Path) -> str:
    lines = [f"# Comparison: run {report.run_id}", "",
             f"Preset `{report.preset}`, run status `{report.status}`. Variants ranked by mean "
             "PSNR; with several seeds, mean ± 95% Student-t interval over n seeds. "
             "A variant below a reference row is flagged in the note column.", ""]
    if report.warnings:
        lines += ["**Warnings**", ""] + [f"- {_md_escape(w)}" for w in report.warnings] + [""]
    rows = []
    for kind, cells in table_rows(report):
        if kind == "variant":
            cells = [cells[0], f"**{cells[1]}**", *cells[2:]]
        elif kind == "reference":
            cells = [cells[0], f"*{cells[1]}*", *cells[2:]]
        rows.append(cells)
    lines += _md_table(TABLE_COLUMNS, rows) + [""]
    lines += ["MSE and MAE are per-frame sums on the [0, 1] scale (OpenSTL conventions); "
              "gate: tests passed/total; params: trainable/total; samp/s: training samples "
              "per second; rows marked ref are the references. Charts, frame strips and "
              "diffs: report.html.", ""]
    lines += ["## Gates", ""]
    gate_rows = []
    seen: set[str] = set()
    for r in report.rows:
        if r.variant in seen or not r.gate_tests:
            continue
        seen.add(r.variant)
        gate_rows += [[r.variant, t.name, t.outcome, f"{t.seconds:.2f}", t.message[:100]]
                      for t in r.gate_tests]
    lines += (_md_table(("variant", "test", "outcome", "seconds", "message"), gate_rows)
              if gate_rows else ["No gate outcomes recorded."]) + [""]
    lines += ["## Provenance", ""]
    prov = [[r.name, r.branch or "-", r.commit[:10] or "-", "yes" if r.dirty else "no",
             r.preset, str(r.seed), r.environment.get("python", "-"),
             r.environment.get("torch", "-"), r.environment.get("device", "-"),
             r.status + (f": {r.reason}" if r.reason else "")] for r in report.rows]
    lines += _md_table(("job", "branch", "commit", "dirty", "preset", "seed", "python", "torch",
                        "device", "status"), prov) + [""]
    diffs = [r for r in report.rows if r.dirty and r.diff_path]
    if diffs:
        lines += ["Uncommitted changes: " + ", ".join(
            f"[{r.name}]({_rel(r.diff_path, out_dir)})" for r in diffs), ""]
    strips = [r for r in report.rows if r.frames_path]
    if strips:
        lines += ["## Frame strips", ""]
        lines += [f"![{r.name}]({_rel(r.frames_path, out_dir)})" for r in strips] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- SVG charts

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac", "#e15759")
REF_COLOURS = {"black": "#444444", "copy_last": "#d62728", "oracle": "#2ca02c"}


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]
    colour: str
    dashed: bool = False


def _ticks(lo: float, hi: float, n: int = 5, *, integer: bool = False) -> list[float]:
    """Round tick values between lo and hi, about n of them (whole numbers if ``integer``)."""
    if hi <= lo:
        return [lo]
    raw = max((hi - lo) / n, 1.0 if integer else 0.0)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis given log10 bounds: 1-2-5 steps, else plain ones in value space."""
    ticks = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo <= math.log10(t) <= hi]
    if len(ticks) > 7:  # several decades: powers of ten only
        ticks = [t for t in ticks if math.log10(t).is_integer()] or ticks
    if len(ticks) < 3:
        ticks = [t for t in _ticks(10**lo, 10**hi, 4) if t > 0]
    return [math.log10(t) for t in ticks]


def _num(v: float) -> str:
    return f"{v:.4g}"


def _svg_frame(title: str, width: int, height: int, body: list[str]) -> str:
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">'
            f'<title>{html.escape(title)}</title>'
            f'<text x="{width / 2}" y="16" class="ct">{html.escape(title)}</text>'
            + "".join(body) + "</svg>")


def svg_lines(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
              width: int = 640, height: int = 300, log_y: bool = False) -> str:
    """A line chart with axes, ticks and a legend; non-finite points are left out.

    ``log_y`` falls back to a linear axis when a value is zero or negative (a loss with an
    entropy term goes below zero): a log axis would silently drop that whole series.
    """
    if log_y and any(y <= 0 for s in series for _, y in s.points if math.isfinite(y)):
        log_y = False

    def ty(v: float) -> float:
        return math.log10(v) if log_y else v

    pts = [(x, ty(y)) for s in series for x, y in s.points
           if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 60, 170, 28, 40
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pa"/>']
    for t in _log_ticks(y0, y1) if log_y else _ticks(y0, y1):
        label = _num(10**t) if log_y else _num(t)
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'class="grid"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" class="yt">'
                    f'{label}</text>')
    integer_x = all(float(x).is_integer() for s in series for x, _ in s.points)
    for t in _ticks(x0, x1, integer=integer_x):
        body.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" class="xt">{_num(t)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 6}" class="xt">'
                f'{html.escape(x_label)}</text>')
    body.append(f'<text x="14" y="{top + ph / 2}" class="yl" transform="rotate(-90 14 '
                f'{top + ph / 2})">{html.escape(y_label)}</text>')
    shown = 0
    for s in series:
        sp = [(sx(x), sy(ty(y))) for x, y in s.points
              if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)]
        if not sp:
            continue
        shown += 1
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in sp)
        body.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" '
                    f'stroke-width="1.8"{dash}/>')
        if len(sp) <= 30:
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{s.colour}"/>'
                     for x, y in sp]
        ly = top + 10 + (shown - 1) * 16
        body.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                    f'stroke="{s.colour}" stroke-width="2"{dash}/><text x="{left + pw + 34}" '
                    f'y="{ly + 4}" class="lg">{html.escape(s.label)}</text>')
    return _svg_frame(title, width, height, body)


def svg_bars(bars: Sequence[tuple[str, Interval, str]],
             refs: Sequence[tuple[str, float, str, str | None]], *, title: str, y_label: str,
             width: int = 640, height: int = 300) -> str:
    """Bars (mean with a 95% interval whisker) and dashed reference lines: (label, value,
    colour, bar) spans the whole chart when bar is None, else only that bar's slot."""
    values = [iv.mean + (iv.half_width or 0) for _, iv, _ in bars if not math.isnan(iv.mean)]
    values += [v for _, v, _, _ in refs if math.isfinite(v)]
    if not values:
        return ""
    lows = [iv.mean - (iv.half_width or 0) for _, iv, _ in bars if not math.isnan(iv.mean)]
    y0 = min(0.0, *lows, *[v for _, v, _, _ in refs if math.isfinite(v)])
    y1 = max(values) * 1.08 or 1.0
    left, right, top, bottom = 60, 170, 28, 48
    pw, ph = width - left - right, height - top - bottom

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    body = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pa"/>']
    for t in _ticks(y0, y1):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                    f'class="grid"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" class="yt">'
                    f'{_num(t)}</text>')
    body.append(f'<text x="14" y="{top + ph / 2}" class="yl" transform="rotate(-90 14 '
                f'{top + ph / 2})">{html.escape(y_label)}</text>')
    slot = pw / max(1, len(bars))
    for i, (label, iv, colour) in enumerate(bars):
        cx = left + slot * (i + 0.5)
        body.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" class="xt">'
                    f'{html.escape(label)}</text>')
        if math.isnan(iv.mean):
            continue
        bw = min(60.0, slot * 0.6)
        body.append(f'<rect x="{cx - bw / 2:.1f}" y="{sy(max(iv.mean, 0)):.1f}" '
                    f'width="{bw:.1f}" height="{abs(sy(iv.mean) - sy(0)):.1f}" '
                    f'fill="{colour}"><title>{html.escape(label)}: '
                    f'{iv.format(4)} (n={iv.n})</title></rect>')
        if iv.half_width:
            lo, hi = sy(iv.mean - iv.half_width), sy(iv.mean + iv.half_width)
            body.append(f'<path d="M{cx:.1f},{lo:.1f}V{hi:.1f}M{cx - 6:.1f},{lo:.1f}'
                        f'h12M{cx - 6:.1f},{hi:.1f}h12" stroke="#222" fill="none"/>')
        body.append(f'<text x="{cx:.1f}" y="{top + ph + 30}" class="xt">n={iv.n}</text>')
    legend: list[str] = []
    slots = {label: i for i, (label, _, _) in enumerate(bars)}
    for label, value, colour, bar_label in refs:
        if not math.isfinite(value):
            continue
        x_from, x_to = float(left), float(left + pw)
        if bar_label is not None:  # this bar's own reference: a segment over its slot only
            if bar_label not in slots:
                continue
            x_from = left + slot * slots[bar_label] + 4
            x_to = x_from + slot - 8
        body.append(f'<line x1="{x_from:.1f}" x2="{x_to:.1f}" y1="{sy(value):.1f}" '
                    f'y2="{sy(value):.1f}" stroke="{colour}" stroke-width="1.5" '
                    f'stroke-dasharray="6 4"><title>{html.escape(label)} {_num(value)}'
                    "</title></line>")
        text = label if bar_label is not None else f"{label} {_num(value)}"
        if text in legend:
            continue
        legend.append(text)
        ly = top + 10 + (len(legend) - 1) * 16
        body.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 30}" y1="{ly}" y2="{ly}" '
                    f'stroke="{colour}" stroke-width="2" stroke-dasharray="6 4"/>'
                    f'<text x="{left + pw + 34}" y="{ly + 4}" class="lg">'
                    f'{html.escape(text)}</text>')
    return _svg_frame(title, width, height, body)


# ---------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}td:nth-child(2),th:nth-child(2){text-align:left}
th{background:#f6f6f6}tr.seed td{color:#666;font-size:.92em}tr.reference td{font-style:italic;
background:#fafafa}.flag{color:#b00;font-weight:600}.warn{background:#fff4e5;
border-left:4px solid #f0a030;padding:.5em 1em}.chart{margin:.5em 1em .5em 0}
.chart .pa{fill:#fff;stroke:#ccc}.chart .grid{stroke:#eee}.chart text{font-size:11px;fill:#333}
.chart .ct{text-anchor:middle;font-weight:600;font-size:13px}.chart .xt{text-anchor:middle}
.chart .yt{text-anchor:end}.chart .yl{text-anchor:middle}pre{background:#f6f8fa;padding:1em;
overflow:auto;font-size:12px}details{margin:.3em 0}.pass{color:#2a7a2a}.fail{color:#b00}
img.strip{width:100%;max-width:960px;image-rendering:pixelated;border:1px solid #ddd}
figure{margin:1em 0}figcaption{color:#555}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _colours(report: Report) -> dict[str, str]:
    return {s.variant: PALETTE[i % len(PALETTE)] for i, s in enumerate(report.variants)}


def _charts(report: Report) -> list[str]:
    colours = _colours(report)
    ok = [r for r in report.rows if r.has_results]
    charts = []
    for metric, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
        bars = [(s.variant, getattr(s, metric), colours[s.variant])
                for s in report.variants if s.psnr.n]
        refs = [(REFERENCE_LABELS.get(ref.name, ref.name) if ref.scope else ref.label,
                 ref.metrics[metric], REF_COLOURS.get(ref.name, "#888"), ref.scope)
                for ref in report.references]
        charts.append(svg_bars(bars, refs, title=f"{label} per variant", y_label=label))
    curves: list[Series] = []
    for s in report.variants:
        mine = [r.per_frame_psnr.get("model", ()) for r in ok if r.variant == s.variant]
        mean = _mean_curves(mine)
        curves.append(Series(s.variant, tuple((i + 1.0, v) for i, v in enumerate(mean)),
                             colours[s.variant]))
    curves += [Series(ref.label, tuple((i + 1.0, v) for i, v in enumerate(ref.per_frame_psnr)),
                      REF_COLOURS.get(ref.name, "#888"), dashed=True)
               for ref in report.references]
    charts.append(svg_lines(curves, title="PSNR per future frame", x_label="future frame",
                            y_label="PSNR (dB)"))
    first_seed: dict[str, int] = {}
    for r in report.rows:
        first_seed.setdefault(r.variant, r.seed)
    # One colour per variant; its later seeds dashed.
    epoch_loss = [Series(r.name, tuple((float(h.epoch), h.train_loss) for h in r.history),
                         colours.get(r.variant, "#888"), dashed=r.seed != first_seed[r.variant])
                  for r in ok if r.history]
    charts.append(svg_lines(epoch_loss, title="train loss per epoch", x_label="epoch",
                            y_label="loss", log_y=True))
    step_loss = []
    for r in report.rows:
        if r.step_losses:
            stride = max(1, len(r.step_losses) // 800)  # keep the file small
            pts = tuple((float(s), v) for s, v in r.step_losses[::stride])
            step_loss.append(Series(r.name, pts, colours.get(r.variant, "#888"),
                                    dashed=r.seed != first_seed[r.variant]))
    charts.append(svg_lines(step_loss, title="loss per step (events.jsonl)", x_label="step",
                            y_label="loss", log_y=True))
    return [c for c in charts if c]


def _data_uri(path: str) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) > MAX_IMAGE_BYTES:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_html(report: Report) -> str:
    h = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         f"<title>orch report {_e(report.run_id)}</title><style>{CSS}</style></head><body>",
         f"<h1>Comparison: run {_e(report.run_id)}</h1>",
         f"<p>Preset <code>{_e(report.preset)}</code>, run status <code>{_e(report.status)}"
         f"</code>, generated {_e(time.strftime('%Y-%m-%d %H:%M'))}. Variants ranked by mean "
         "PSNR; with several seeds: mean ± 95% Student-t interval over n seeds. MSE and MAE "
         "are per-frame sums on the [0, 1] scale.</p>"]
    if report.warnings:
        h.append('<div class="warn"><b>Warnings</b><ul>' +
                 "".join(f"<li>{_e(w)}</li>" for w in report.warnings) + "</ul></div>")
    h.append("<h2>Results</h2><table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in TABLE_COLUMNS)
             + "</tr>")
    for kind, cells in table_rows(report):
        note = cells[-1]
        flagged = kind != "reference" and "below" in note
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells[:-1])
        h.append(f'<tr class="{kind}">{tds}<td class="{"flag" if flagged else ""}">'
                 f"{_e(note)}</td></tr>")
    h.append("</table>")
    h.append("<h2>Charts</h2>" + "".join(_charts(report)))
    strips = [r for r in report.rows if r.frames_path]
    if strips:
        h.append("<h2>Frame strips</h2>")
        for r in strips:
            uri = _data_uri(r.frames_path)
            if uri:
                h.append(f'<figure><img class="strip" alt="frames of {_e(r.name)}" '
                         f'src="{uri}"><figcaption>{_e(r.name)} (seed {r.seed}): per clip, context '
                         "frames then the true future, and below them the same context then "
                         "the predicted future</figcaption></figure>")
    h.append("<h2>Gates</h2>")
    seen: set[str] = set()
    for r in report.rows:
        if r.variant in seen or r.gate_passed is None:
            continue
        seen.add(r.variant)
        verdict = "passed" if r.gate_passed else "failed"
        h.append(f'<h3>{_e(r.variant)}: <span class="{verdict[:4]}">{verdict}</span></h3>'
                 "<table><tr><th>outcome</th><th>test</th><th>seconds</th><th>message</th></tr>")
        for t in r.gate_tests:
            cls = "pass" if t.outcome == "passed" else "fail"
            h.append(f'<tr><td class="{cls}">{_e(t.outcome)}</td><td>{_e(t.name)}</td>'
                     f"<td>{t.seconds:.2f}</td><td>{_e(t.message[:200])}</td></tr>")
        h.append("</table>")
    if not seen:
        h.append("<p>No gate outcomes recorded.</p>")
    h.append("<h2>Provenance</h2>")
    for r in report.rows:
        env = r.environment
        h.append(f"<h3>{_e(r.name)}</h3><table>"
                 f"<tr><th>branch</th><td>{_e(r.branch or '-')}</td></tr>"
                 f"<tr><th>commit</th><td><code>{_e(r.commit or '-')}</code>"
                 f"{' (dirty)' if r.dirty else ''}</td></tr>"
                 f"<tr><th>preset / seed</th><td>{_e(r.preset)} / {r.seed}</td></tr>"
                 f"<tr><th>status</th><td>{_e(r.status)}{': ' + _e(r.reason) if r.reason else ''}"
                 "</td></tr>"
                 f"<tr><th>environment</th><td>python {_e(env.get('python', '-'))}, torch "
                 f"{_e(env.get('torch', '-'))}, {_e(env.get('device', '-'))}, cuda "
                 f"{_e(env.get('cuda') or '-')}, {_e(env.get('threads') or '-')} threads, "
                 f"{_e(env.get('platform', '-'))}</td></tr>"
                 f"<tr><th>memory</th><td>{fmt(r.peak_memory_mb, 0)} MB peak</td></tr></table>")
        if r.dirty and r.diff_path:
            try:
                diff = Path(r.diff_path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                diff = f"(diff not readable: {r.diff_path})"
            if len(diff) > MAX_DIFF_CHARS:
                diff = diff[:MAX_DIFF_CHARS] + "\n... (truncated)"
            h.append(f"<details><summary>uncommitted diff ({diff.count(chr(10))} lines)"
                     f"</summary><pre>{_e(diff)}</pre></details>")
    h.append("</body></html>\n")
    return "\n".join(h)
