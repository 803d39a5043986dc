"""Merging: every job of a run into records, a summary per variant and the reference rows.

``build_report(run_dir, study)`` reads the run state (provenance, gate outcomes, failures)
and each job's results.json and events.jsonl, and returns a ``Report``: one ``JobRow`` per
job, one ``VariantSummary`` per variant (mean and 95% Student-t interval over seeds of each
declared metric), and the reference rows. It writes nothing; the views (markdown, HTML,
terminal, ``--json``) render these same records.

Everything about the numbers comes from the study's declaration (``orchestrator.study``):
which metrics, which way is better, which one ranks, which rows are floors a model must beat
and which are ceilings (shown, not flagged). Honesty rules: a variant that trails a floor on
any declared metric is flagged on those metrics in every view; failed jobs and unreadable
results stay visible as rows and warnings instead of silently dropping out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from orchestrator import state as st
from orchestrator.formats import (
    MODEL_ROW,
    CorruptFile,
    EpochStats,
    Results,
    Series,
    TestOutcome,
    collect_warnings,
    jsonable,
    load_results,
    log,
    warn_corrupt,
)
from orchestrator.progress import read_progress
from orchestrator.report.paired import Comparison, comparisons, supported_ranks
from orchestrator.report.pairs import PairDiff, report_pairs
from orchestrator.report.params import ParamsTable, column_configs, params_table
from orchestrator.report.stats import Interval, mean_interval
from orchestrator.study import VIDEO_STUDY, StudySpec, inferred_study

# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Picture:
    """An image a job's results declare (e.g. a frame strip), where it is on disk."""

    name: str
    path: str
    caption: str


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
    per_example: dict[str, dict[str, tuple[float, ...]]]  # row -> metric -> per example
    series: dict[str, Series]  # name -> a curve per row over an index
    pictures: tuple[Picture, ...]
    trainable: int | None
    frozen: int | None
    wall_s: float | None
    samples_per_s: float | None
    peak_memory_mb: float | None
    environment: dict[str, Any]
    history: tuple[EpochStats, ...]
    step_losses: tuple[tuple[int, float], ...]
    results_path: str
    flags: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)  # results.json `config`, as recorded

    @property
    def has_results(self) -> bool:
        return MODEL_ROW in self.metrics


@dataclass(frozen=True)
class VariantSummary:
    variant: str
    rank: int | None  # what the paired verdicts support (paired.supported_ranks), or by mean
    tied: bool  # another variant shares the rank: no detectable difference between them
    seeds: tuple[int, ...]
    metrics: dict[str, Interval]  # declared metric -> mean and interval over seeds
    references: dict[str, dict[str, float]]  # this variant's reference rows, seed means
    gate: str
    trainable: int | None
    frozen: int | None
    wall_s: float | None
    samples_per_s: float | None
    status: str  # "ok", or why there are no numbers
    flags: tuple[str, ...]

    @property
    def scored(self) -> bool:
        return any(interval.n for interval in self.metrics.values())


@dataclass(frozen=True)
class ReferenceRow:
    """A floor or ceiling row; ``scope`` is None when every job has the same values."""

    name: str
    role: str  # floor or ceiling
    title: str  # the study's label for it
    scope: str | None
    metrics: dict[str, float]
    series: dict[str, tuple[float, ...]]  # series name -> this row's curve

    @property
    def label(self) -> str:
        return self.title if self.scope is None else f"{self.title} ({self.scope})"


@dataclass
class Report:
    run_id: str
    preset: str
    status: str
    study: StudySpec
    rows: list[JobRow]
    variants: list[VariantSummary]
    references: list[ReferenceRow]
    comparisons: list[Comparison] = field(default_factory=list)  # paired differences
    warnings: list[str] = field(default_factory=list)
    params: ParamsTable | None = None  # the config keys that differ between variants
    pairs: list[PairDiff] = field(default_factory=list)  # code, params, metrics per pair
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
        data["pairs"] = [pair.to_dict() for pair in self.pairs]
        return data


# ---------------------------------------------------------------------------- merging


def trailed(model: dict[str, float], refs: dict[str, dict[str, float]],
            study: StudySpec) -> dict[str, list[str]]:
    """Per floor row, the declared metrics on which ``model`` is worse than it (each in its
    own direction). Ceilings are shown beside the model, never flagged: a model may come
    near one, and passing it is measurement noise more often than a fault."""
    out: dict[str, list[str]] = {}
    for ref in study.references:
        if ref.role != "floor" or ref.name not in refs:
            continue
        worse = [m.name for m in study.metrics if study.declared and m.worse(
            model.get(m.name, math.nan), refs[ref.name].get(m.name, math.nan))]
        if worse:
            out[ref.name] = worse
    return out


def flags_for(model: dict[str, float], refs: dict[str, dict[str, float]],
              study: StudySpec) -> tuple[str, ...]:
    """"below <floor> (<metrics>)" for each floor the model trails on any declared metric."""
    return tuple(f"below {study.reference(name).title} "
                 f"({', '.join(study.metric(m).title for m in metrics)})"
                 for name, metrics in trailed(model, refs, study).items())


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


def _job_row(job: st.JobState) -> tuple[JobRow, Results | None]:
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
    variant = job.variant
    if results is not None and not job.branch:  # no run state: the results name the job
        variant = results.variant
    pictures = tuple(Picture(name, str(results.image_path(name)), image.caption)
                     for name, image in results.images.items()
                     if results.image_path(name).exists()) if results else ()
    row = JobRow(
        name=job.name, variant=variant, seed=results.seed if results else job.seed,
        preset=results.preset if results else job.preset, status=status, reason=reason,
        branch=job.branch, commit=job.commit, dirty=job.dirty, diff_path=job.diff_path,
        gate_passed=None if gate is None else gate.passed,
        gate_tests=tuple(gate.tests if gate else ()),
        metrics={row: dict(values) for row, values in results.metrics.items()}
        if results else {},
        per_example={row: dict(values) for row, values in results.per_example.items()}
        if results else {},
        series=dict(results.series) if results else {},
        pictures=pictures,
        trainable=results.trainable if results else None,
        frozen=results.frozen if results else None,
        wall_s=results.timings.wall_s if results else None,
        samples_per_s=results.timings.samples_per_s if results else None,
        peak_memory_mb=results.timings.peak_memory_mb if results else None,
        environment=dict(results.environment) if results else {},
        history=results.history if results else (),
        step_losses=tuple(progress.step_losses) if progress else (),
        results_path=str(results.path) if results else "",
        flags=_retried(job),
        config=dict(results.config) if results else {},
    )
    return row, results


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean_metrics(rows: Sequence[JobRow], name: str) -> dict[str, float]:
    names = dict.fromkeys(m for r in rows for m in r.metrics.get(name, {}))
    return {m: _mean([r.metrics[name][m] for r in rows if m in r.metrics.get(name, {})])
            for m in names}


def _gate_text(rows: Sequence[JobRow]) -> str:
    gated = [r for r in rows if r.gate_passed is not None]
    if not gated:
        return "-"
    tests = gated[0].gate_tests
    passed = sum(t.outcome == "passed" for t in tests)
    return f"{'ok' if gated[0].gate_passed else 'FAIL'} {passed}/{len(tests)}"


def _summaries(rows: list[JobRow], study: StudySpec) -> list[VariantSummary]:
    by_variant: dict[str, list[JobRow]] = {}
    for row in rows:
        by_variant.setdefault(row.variant, []).append(row)
    out = []
    for variant, jobs in by_variant.items():
        ok = [r for r in jobs if r.has_results]
        refs = {ref.name: _mean_metrics(ok, ref.name) for ref in study.references
                if any(ref.name in r.metrics for r in ok)}
        model = {m.name: mean_interval([r.metrics[MODEL_ROW][m.name] for r in ok
                                        if m.name in r.metrics[MODEL_ROW]])
                 for m in study.metrics}
        failed = [r for r in jobs if not r.has_results]
        status = "ok" if ok else (failed[0].status + (f": {failed[0].reason}"
                                                      if failed[0].reason else ""))
        flags = flags_for({name: i.mean for name, i in model.items()}, refs, study) \
            if ok else ()
        flags += tuple(dict.fromkeys(f for r in jobs for f in r.flags if f.startswith("OOM")))
        if ok and failed:
            flags += (f"{len(failed)} of {len(jobs)} jobs without results",)
        out.append(VariantSummary(
            variant=variant, rank=None, tied=False, seeds=tuple(sorted(r.seed for r in ok)),
            metrics=model, references=refs, gate=_gate_text(jobs),
            trainable=ok[0].trainable if ok else None, frozen=ok[0].frozen if ok else None,
            wall_s=_mean([r.wall_s for r in ok if r.wall_s is not None]) if ok else None,
            samples_per_s=_mean([r.samples_per_s for r in ok if r.samples_per_s is not None])
            if ok else None,
            status=status, flags=flags,
        ))
    ranking = study.ranking
    if ranking is None:  # nothing declared: the config's order, unranked
        return out

    def key(s: VariantSummary) -> tuple[int, float]:
        interval = s.metrics.get(ranking.name)
        score = ranking.score(interval.mean) if interval and interval.n else math.nan
        return (0, -score) if not math.isnan(score) else (1, 0.0)

    out.sort(key=key)
    return [replace(s, rank=i + 1) if key(s)[0] == 0 else s for i, s in enumerate(out)]


def _samples(rows: list[JobRow], variants: list[VariantSummary]
             ) -> dict[str, dict[str, dict[str, list[list[float]]]]]:
    """variant -> row -> metric -> one list of per-example values per seed, for the variants
    whose every scored job has them."""
    out: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    for summary in variants:
        jobs = [r for r in rows if r.variant == summary.variant and r.has_results]
        if not jobs or not all(r.per_example.get(MODEL_ROW) for r in jobs):
            continue
        out[summary.variant] = {
            row: {metric: [list(r.per_example[row][metric]) for r in jobs]
                  for metric in jobs[0].per_example[row]
                  if all(metric in r.per_example.get(row, {}) for r in jobs)}
            for row in jobs[0].per_example}
    return out


def _paired_ranks(variants: list[VariantSummary], found: list[Comparison],
                  study: StudySpec) -> list[VariantSummary]:
    """The ranks the paired verdicts support on the ranking metric (when every ranked
    variant has per-example results), ties marked; the order by rank, then by mean."""
    metric = study.ranking
    ranked = [s for s in variants if s.rank is not None]
    compared = {c.a for c in found} | {c.b for c in found}
    if metric is None or len(ranked) < 2 or not all(s.variant in compared for s in ranked):
        return variants
    ranks = supported_ranks([s.variant for s in ranked], found, metric)
    order = {s.variant: i for i, s in enumerate(variants)}
    updated = [replace(s, rank=ranks[s.variant][0], tied=ranks[s.variant][1])
               if s.variant in ranks else s for s in variants]
    return sorted(updated, key=lambda s: (s.rank is None, s.rank or 0, order[s.variant]))


def _same(values: list[dict[str, float]]) -> bool:
    first = values[0]
    return all(math.isclose(v[m], first[m], rel_tol=1e-9, abs_tol=1e-12) or
               (math.isnan(v[m]) and math.isnan(first[m])) for v in values for m in first)


def _references(rows: list[JobRow], variants: list[VariantSummary],
                study: StudySpec) -> list[ReferenceRow]:
    """One row per reference if all jobs agree (same held-out data), else one per variant."""
    ok = [r for r in rows if r.has_results]
    out = []
    for ref in study.references:
        having = [r for r in ok if ref.name in r.metrics]
        if not having:
            continue
        if _same([r.metrics[ref.name] for r in having]):
            first = having[0]
            out.append(ReferenceRow(ref.name, ref.role, ref.title, None,
                                    dict(first.metrics[ref.name]), _curves(first, ref.name)))
            continue
        for summary in variants:
            mine = [r for r in having if r.variant == summary.variant]
            if mine:
                series = {name: mean_curve([_curves(r, ref.name).get(name, ()) for r in mine])
                          for name in mine[0].series}
                out.append(ReferenceRow(ref.name, ref.role, ref.title, summary.variant,
                                        summary.references[ref.name], series))
    return out


def _curves(row: JobRow, name: str) -> dict[str, tuple[float, ...]]:
    """Row ``name``'s curve in each of a job's series."""
    return {series: values.rows[name] for series, values in row.series.items()
            if name in values.rows}


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


def build_report(run_dir: Path, study: StudySpec | None = None, *, with_pairs: bool = True,
                 folders: Mapping[str, str] | None = None) -> Report:
    """Merge a run's jobs into a Report, by the ``study``'s declaration (None: the video
    study's for schema-1 results, else what the results hold, unranked); writes nothing.
    ``with_pairs``: each pair of variants' code diff too (git, a call or two a pair), and
    with ``folders`` (variant -> its folder, from the config) the diff of their folders.
    Unreadable files become warnings (the same lines the ``orchestrator`` logger carries);
    nothing here raises for them."""
    with collect_warnings() as warnings:
        run = st.read_state_file(run_dir / st.STATE_FILE)
        if run is not None:
            run = st.refresh_liveness(run)
            jobs = run.jobs
        else:
            jobs = _jobs_without_state(run_dir)
        loaded = [_job_row(job) for job in jobs]
    rows = [row for row, _ in loaded]
    if study is None:
        read = [results for _, results in loaded if results is not None]
        study = VIDEO_STUDY if read and all(r.read_from_schema == 1 for r in read) else \
            inferred_study(r.metrics for r in rows)
    rows = [replace(r, flags=flags_for(r.metrics[MODEL_ROW], r.metrics, study) + r.flags)
            if r.has_results else r for r in rows]
    variants = _summaries(rows, study)
    found = comparisons(_samples(rows, variants), study)
    variants = _paired_ranks(variants, found, study)
    run_id = run.run_id if run else run_dir.name
    configs = column_configs((r.variant, r.config) for s in variants for r in rows
                             if r.variant == s.variant)
    # The run folder sits in the repository (under .orch) unless ORCH_HOME moved it; the
    # current folder is where `orch compare` is typed.
    pairs = report_pairs(rows, [s.variant for s in variants], found, study, run_id=run_id,
                         repos=[run_dir, Path.cwd()], folders=folders) if with_pairs else []
    return Report(
        run_id=run_id,
        preset=run.preset if run else ", ".join(sorted({r.preset for r in rows})),
        status=run.status.value if run else "unknown", study=study,
        rows=rows, variants=variants, references=_references(rows, variants, study),
        comparisons=found, warnings=warnings,
        params=params_table(configs) if sum(map(bool, configs.values())) > 1 else None,
        pairs=pairs,
    )
