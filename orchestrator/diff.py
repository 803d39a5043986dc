"""`orch diff A B`: how two variants differ, in their code, their params and their numbers.

A and B each name a variant (all its seeds) or a job (``baseline-s1``) of one run (the
newest with results, or ``run_id``), or ``RUN_ID:VARIANT`` (or ``RUN_ID:JOB``) for a run of
its own, so that two runs can be compared. The code is what the jobs recorded: their commit
(a job without one stands in with its branch's tip), the diff between the two commits, and
the diff between the variants' folders when the config puts them in different ones (a study
whose variants are folders of one commit differs there, not between commits); a job that ran
on a dirty tree is noted, and the patch it recorded comes with the result. The params are
the recorded configs' differing keys; the metrics the report's paired comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator import state as st
from orchestrator.errors import UsageError
from orchestrator.report.build import JobRow, Report, build_report, latest_run_with_results
from orchestrator.report.pairs import PairDiff, Side, pair_diff, side_of
from orchestrator.study import StudySpec

__all__ = ["PairDiff", "Side", "diff_variants", "parse_name"]

RUN_SEPARATOR = ":"


@dataclass(frozen=True)
class _Named:
    label: str  # as the user wrote it
    run_id: str
    rows: tuple[JobRow, ...]
    whole_variant: bool  # every job of a variant, not one job of it


def parse_name(text: str) -> tuple[str | None, str]:
    """``RUN_ID:NAME`` -> (run id, name); a plain name -> (None, name)."""
    run_id, sep, name = text.rpartition(RUN_SEPARATOR)
    return (run_id or None, name) if sep else (None, text)


def _select(report: Report, label: str, name: str) -> _Named:
    """The jobs ``name`` means in ``report``: a variant's, or one job."""
    rows = tuple(r for r in report.rows if r.variant == name)
    if rows:
        return _Named(label, report.run_id, rows, whole_variant=True)
    rows = tuple(r for r in report.rows if r.name == name)
    if rows:
        return _Named(label, report.run_id, rows, whole_variant=False)
    variants = list(dict.fromkeys(r.variant for r in report.rows))
    jobs = [r.name for r in report.rows if r.name not in variants]
    there = (f"its variants: {', '.join(variants)}" if variants else "it has no jobs") + (
        f" (jobs: {', '.join(jobs)})" if jobs else "")
    raise UsageError(f"no variant or job '{name}' in run {report.run_id}; {there}")


def _names(named: _Named) -> tuple[str, ...]:
    return tuple(r.name for r in named.rows)


def _uncommitted(sides: Sequence[tuple[Side, Sequence[JobRow]]]) -> dict[str, str]:
    """job name -> the patch of uncommitted changes it recorded; a side's seeds that ran on
    the same dirty tree give one."""
    out: dict[str, str] = {}
    for _, rows in sides:
        mine: set[str] = set()
        for row in rows:
            if not (row.dirty and row.diff_path):
                continue
            try:
                text = Path(row.diff_path).read_text(encoding="utf-8", errors="replace")
            except OSError as error:
                text = f"(the recorded patch is not readable: {error.strerror or error})\n"
            if text not in mine:
                mine.add(text)
                out[row.name] = text
    return out


def diff_variants(home: Path, a: str, b: str, *, run_id: str | None = None,
                  study: StudySpec | None = None, repo: Path | None = None,
                  branches: Mapping[str, str] | None = None,
                  folders: Mapping[str, str] | None = None) -> PairDiff:
    """A against B. ``home``: the state directory; ``study``: the config's declaration (None:
    what the results hold); ``repo``: where the commits are (the run folder's repository and
    the current one are tried after it); ``branches`` and ``folders``: each variant's branch
    and folder as the config declares them (the branch stands in for a missing commit)."""
    default_run = run_id or latest_run_with_results(home)
    reports: dict[str, Report] = {}
    named = []
    for text in (a, b):
        given_run, name = parse_name(text)
        rid = given_run or default_run
        if rid is None:
            raise UsageError(f"no run found in {home}: start one with `orch run` or `orch train`")
        if rid not in reports:
            reports[rid] = build_report(st.existing_run_dir(home, rid), study,
                                        with_pairs=False)
        named.append(_select(reports[rid], text, name))
    first, second = named
    if (first.run_id, _names(first)) == (second.run_id, _names(second)):
        raise UsageError(f"{a} and {b} are the same jobs of run {first.run_id}: name two "
                         "variants or jobs (RUN_ID:VARIANT for one of another run)")
    sides = [(side_of(n.label, n.run_id, n.rows,
                      branch=(branches or {}).get(n.rows[0].variant, ""),
                      folder=(folders or {}).get(n.rows[0].variant, "")), n.rows)
             for n in named]
    report = reports[first.run_id]
    same_run_variants = first.run_id == second.run_id and first.whole_variant and \
        second.whole_variant
    repos = [p for p in (repo, st.run_dir(home, first.run_id), st.run_dir(home, second.run_id),
                         Path.cwd()) if p is not None]
    (side_a, rows_a), (side_b, rows_b) = sides
    pair = pair_diff(side_a, rows_a, side_b, rows_b, study or report.study, repos=repos,
                     found=report.comparisons if same_run_variants else None)
    return replace(pair, uncommitted=_uncommitted(sides))
