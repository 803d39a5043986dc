"""Two variants (or two jobs) side by side: how their code, their params and their numbers
differ. What only orch can show, because its variants are branches: the code diff beside
the metric diff.

A side is a variant's jobs (all its seeds) or one job, of one run. Its code is the commit
its jobs recorded; a job that recorded none stands in with its branch's tip, and a job that
ran on a dirty tree is noted (its uncommitted patch is not in the diff between commits).
The metric differences are the report's own paired comparisons (``paired``), mirrored when
the report compared the pair the other way round, or computed the same way for sides the
report does not pair (single jobs, runs apart). ``orch diff`` renders one pair; the report
renders every pair of its variants.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from orchestrator.formats import MODEL_ROW, jsonable
from orchestrator.report.code import CodeDiff, code_diff
from orchestrator.report.paired import Comparison, comparisons
from orchestrator.report.params import ParamsTable, params_table
from orchestrator.study import StudySpec

if TYPE_CHECKING:
    from orchestrator.report.build import JobRow

# report.html folds each pair's patch; past this it is cut (`orch diff` shows it whole).
REPORT_PATCH_CHARS = 200_000
FILES_IN_MARKDOWN = 30


@dataclass(frozen=True)
class Side:
    label: str  # as named: a variant, a job (baseline-s1), or RUN_ID:VARIANT
    run_id: str
    variant: str
    jobs: tuple[str, ...]
    ref: str  # what git is asked for: the recorded commit, else the branch ("" neither)
    commit: str  # recorded ("" when no job recorded one)
    branch: str
    commits: tuple[str, ...]  # every distinct commit its jobs recorded
    dirty: bool  # a job ran with uncommitted changes
    diff_paths: tuple[str, ...]  # where those changes were recorded
    folder: str = ""  # the variant's folder in the repository, when the config says


@dataclass(frozen=True)
class MetricDiff:
    metric: str
    title: str
    digits: int
    a: float  # mean over A's scored jobs (NaN: none)
    b: float
    paired: Comparison | None  # A against B; None without per-example results on both


@dataclass(frozen=True)
class PairDiff:
    a: Side
    b: Side
    code: CodeDiff  # A's commit -> B's commit
    folders: CodeDiff | None  # A's folder -> B's folder, when they live in different ones
    params: ParamsTable  # the config keys that differ, A and B as the columns
    metrics: tuple[MetricDiff, ...]
    notes: tuple[str, ...]
    uncommitted: dict[str, str] = field(default_factory=dict)  # label -> recorded patch

    @property
    def title(self) -> str:
        return f"{self.a.label} vs {self.b.label}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become null), with the code diffs' totals."""
        data: dict[str, Any] = jsonable(TypeAdapter(PairDiff).dump_python(self, mode="json"))
        for key, code in (("code", self.code), ("folders", self.folders)):
            if code is not None:
                data[key].update(added=code.added, removed=code.removed)
        return data


def side_of(label: str, run_id: str, rows: Sequence[JobRow], *, branch: str = "",
            folder: str = "") -> Side:
    """The side made of ``rows`` (one variant's jobs); ``branch`` (the config's) stands in
    when no job recorded a commit or a branch."""
    ordered = sorted(rows, key=lambda r: r.seed)
    commits = tuple(dict.fromkeys(r.commit for r in ordered if r.commit))
    recorded_branch = next((r.branch for r in ordered if r.branch), "") or branch
    commit = commits[0] if commits else ""
    return Side(label=label, run_id=run_id, variant=ordered[0].variant if ordered else label,
                jobs=tuple(r.name for r in ordered), ref=commit or recorded_branch,
                commit=commit, branch=recorded_branch, commits=commits,
                dirty=any(r.dirty for r in ordered),
                diff_paths=tuple(r.diff_path for r in ordered if r.dirty and r.diff_path),
                folder=folder)


def mirrored(c: Comparison, a: str, b: str) -> Comparison:
    """B against A as A against B: the difference and the interval negated and swapped."""
    verdict = {"better": "worse", "worse": "better"}.get(c.verdict, c.verdict)
    return Comparison(a, b, c.metric, -c.difference, -c.high, -c.low, verdict, c.examples,
                      (c.seeds[1], c.seeds[0]))


def _between(found: Sequence[Comparison], a: Side, b: Side) -> dict[str, Comparison]:
    """metric -> A against B, from comparisons of the variants by name."""
    out = {}
    for c in found:
        if (c.a, c.b) == (a.variant, b.variant):
            out[c.metric] = replace(c, a=a.label, b=b.label)
        elif (c.a, c.b) == (b.variant, a.variant):
            out[c.metric] = mirrored(c, a.label, b.label)
    return out


def _model_samples(rows: Sequence[JobRow]) -> dict[str, list[list[float]]]:
    """metric -> one list of per-example values per job, when every scored job has them."""
    scored = [r for r in rows if r.has_results]
    if not scored or not all(r.per_example.get(MODEL_ROW) for r in scored):
        return {}
    first = scored[0].per_example[MODEL_ROW]
    return {m: [list(r.per_example[MODEL_ROW][m]) for r in scored] for m in first
            if all(m in r.per_example[MODEL_ROW] for r in scored)}


def _mean(rows: Sequence[JobRow], metric: str) -> float:
    values = [r.metrics[MODEL_ROW][metric] for r in rows
              if r.has_results and metric in r.metrics[MODEL_ROW]]
    return sum(values) / len(values) if values else math.nan


def _notes(side: Side) -> list[str]:
    notes = []
    if not side.ref:
        notes.append(f"{side.label}: no commit or branch recorded, so no code to compare")
    elif not side.commit:
        notes.append(f"{side.label}: no commit recorded; the tip of branch {side.branch} "
                     "stands in (it may have moved since the run)")
    if len(side.commits) > 1:
        notes.append(f"{side.label}: its jobs ran on different commits ("
                     f"{', '.join(c[:10] for c in side.commits)}); the diff uses the first")
    if side.dirty:
        where = ("but in the patch its job recorded (diff.patch in the job's folder)"
                 if side.diff_paths else "and its job recorded no patch of them")
        notes.append(f"{side.label} ran with uncommitted changes on top of its commit: they "
                     f"are not in the code diff, {where}")
    return notes


def pair_diff(a: Side, rows_a: Sequence[JobRow], b: Side, rows_b: Sequence[JobRow],
              study: StudySpec, *, repos: Sequence[Path],
              found: Sequence[Comparison] | None = None,
              max_chars: int | None = None) -> PairDiff:
    """A against B. ``found``: the report's comparisons when A and B are whole variants of
    its run (so both views give the same numbers); else they are computed here."""
    if a.ref and b.ref:
        code = code_diff(repos, a.ref, b.ref, max_chars=max_chars)
    else:
        code = CodeDiff(a.ref, b.ref, "", "", error="no commit or branch recorded")
    folders = None
    if a.folder and b.folder and a.folder != b.folder and not code.error:
        folders = code_diff(repos, f"{code.old_commit}:{a.folder}",
                            f"{code.new_commit}:{b.folder}", max_chars=max_chars)
    params = params_table({a.label: [r.config for r in rows_a if r.config],
                           b.label: [r.config for r in rows_b if r.config]})
    if found is not None:
        paired = _between(found, a, b)
    else:  # the floors are the report's business: pair the two sides alone
        samples = {a.label: {MODEL_ROW: _model_samples(rows_a)},
                   b.label: {MODEL_ROW: _model_samples(rows_b)}}
        paired = {c.metric: c for c in comparisons(samples, replace(study, references=()))}
    notes = _notes(a) + _notes(b)
    if code.same and not (a.folder and b.folder) and a.variant != b.variant:
        notes.append(f"{a.label} and {b.label} ran the same code at the commit level: what "
                     "sets them apart is in their folders or their config (`orch diff "
                     f"{a.label} {b.label}` diffs the folders the config names)")
    metrics = tuple(MetricDiff(m.name, m.title, m.digits, _mean(rows_a, m.name),
                               _mean(rows_b, m.name), paired.get(m.name))
                    for m in study.metrics)
    return PairDiff(a, b, code, folders, params, metrics, tuple(notes))


def report_pairs(rows: Sequence[JobRow], variants: Sequence[str], found: Sequence[Comparison],
                 study: StudySpec, *, run_id: str, repos: Sequence[Path],
                 folders: Mapping[str, str] | None = None) -> list[PairDiff]:
    """Every pair of ``variants`` (in that order, so A is the better ranked) that recorded
    some code, each patch cut for report.html; ``folders``: each variant's folder, when the
    caller has the config."""
    sides = []
    for variant in variants:
        mine = [r for r in rows if r.variant == variant]
        side = side_of(variant, run_id, mine, folder=(folders or {}).get(variant, ""))
        if side.ref:
            sides.append((side, mine))
    return [pair_diff(a, rows_a, b, rows_b, study, repos=repos, found=found,
                      max_chars=REPORT_PATCH_CHARS)
            for i, (a, rows_a) in enumerate(sides) for b, rows_b in sides[i + 1:]]


# ---------------------------------------------------------------------------- table cells

FILE_COLUMNS = ("file", "+", "-")


def file_cells(code: CodeDiff, limit: int | None = None) -> list[list[str]]:
    """Per file: path, lines added, lines removed ("bin" for a binary file); past ``limit``
    files, one row that counts the rest."""
    shown = code.files if limit is None else code.files[:limit]
    cells = [[f.path, "bin" if f.added is None else f"+{f.added}",
              "bin" if f.removed is None else f"-{f.removed}"] for f in shown]
    if len(code.files) > len(shown):
        rest = code.files[len(shown):]
        cells.append([f"... {len(rest)} more files", f"+{sum(f.added or 0 for f in rest)}",
                      f"-{sum(f.removed or 0 for f in rest)}"])
    return cells


def _short(revision: str) -> str:
    """A commit (or commit:folder) with the commit cut to 10 characters."""
    commit, sep, folder = revision.partition(":")
    return commit[:10] + sep + folder


def code_line(code: CodeDiff, what: str = "commits") -> str:
    """One line: which code against which, and how much changed."""
    if code.error:
        return f"Code ({what}): unavailable: {code.error}."
    old, new = _short(code.old_commit or code.old), _short(code.new_commit or code.new)
    if code.same:
        return f"Code ({what}): {old} and {new} hold the same code."
    cut = " (the patch is cut short here)" if code.truncated else ""
    return f"Code ({what}): {old} -> {new}: {code.stat()}{cut}."


def metric_columns(pair: PairDiff) -> tuple[str, ...]:
    return ("metric", f"A: {pair.a.label}", f"B: {pair.b.label}", "A - B",
            "A's advantage, 95% interval", "verdict", "examples")


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def metric_cells(pair: PairDiff) -> list[list[str]]:
    """Per metric: both means, their difference, the paired interval and the verdict."""
    out = []
    for m in pair.metrics:
        c, digits = m.paired, m.digits + 1
        difference = m.a - m.b if c is None else c.difference
        if c is None:
            interval, verdict, examples = "-", "no per-example results: no interval", "-"
        else:
            interval = f"[{_fmt(c.low, digits)}, {_fmt(c.high, digits)}]"
            verdict = {"better": f"{pair.a.label} better", "worse": f"{pair.a.label} worse",
                       "tie": "no detectable difference"}[c.verdict]
            seeds = f" x {c.seeds[0]}/{c.seeds[1]} seeds" if max(c.seeds) > 1 else ""
            examples = f"{c.examples}{seeds}"
        sign = "n/a" if math.isnan(difference) else f"{difference:+.{digits}f}"
        out.append([m.title, _fmt(m.a, m.digits), _fmt(m.b, m.digits), sign, interval,
                    verdict, examples])
    return out


def side_line(side: Side) -> str:
    """Which code a side ran: commit, branch, jobs, and whether its tree was dirty."""
    code = side.commit[:10] if side.commit else (f"tip of {side.branch}" if side.branch
                                                 else "no commit")
    on = f" on {side.branch}" if side.commit and side.branch else ""
    jobs = f", jobs {', '.join(side.jobs)}" if len(side.jobs) > 1 else ""
    dirty = ", with uncommitted changes" if side.dirty else ""
    return f"{side.label}: run {side.run_id}, commit {code}{on}{jobs}{dirty}"
