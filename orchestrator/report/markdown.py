"""report.md, and the table cells the markdown and the terminal table share."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.report.build import Report, trailed
from orchestrator.report.pairs import (
    FILE_COLUMNS,
    FILES_IN_MARKDOWN,
    PairDiff,
    code_line,
    file_cells,
    side_line,
)
from orchestrator.report.params import summary_sentence, table_cells
from orchestrator.ui import fmt_duration

MAX_NOTE = 48


def table_columns(report: Report) -> tuple[str, ...]:
    """The comparison table's columns: one per declared metric between the fixed ones."""
    return ("#", "variant", "seed", *(m.title for m in report.study.metrics), "gate", "params",
            "wall", "samp/s", "note")


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


def _note(text: str) -> str:
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 1] + "…"


def flag_lines(report: Report) -> list[str]:
    """One sentence per variant and floor row it trails, with the numbers of each metric."""
    lines = []
    for s in report.variants:
        if s.status != "ok":
            continue
        means = {name: interval.mean for name, interval in s.metrics.items()}
        for ref, metrics in trailed(means, s.references, report.study).items():
            parts = [f"{report.study.metric(m).title} "
                     f"{s.metrics[m].format(report.study.metric(m).digits)} vs "
                     f"{fmt(s.references[ref].get(m), report.study.metric(m).digits)}"
                     for m in metrics]
            lines.append(f"{s.variant} trails {report.study.reference(ref).title} (a floor) on "
                         + ", ".join(parts))
    return lines


def flagged(note: str) -> bool:
    """Whether a note cell says the row trails a floor (what every view marks in red)."""
    return any(part.startswith("below ") for part in note.split("; "))


def table_rows(report: Report) -> list[tuple[str, list[str]]]:
    """The comparison table as (kind, cells): kind is "variant", "seed" or "reference".

    Variants in rank order, each followed by its seeds when there are several; then the
    reference rows (marked "ref" in the first column). The terminal and the markdown render
    these same cells; full failure reasons are in the warnings and the provenance.
    """
    metrics = report.study.metrics
    out: list[tuple[str, list[str]]] = []
    for s in report.variants:
        seeds = (f"n={len(s.seeds)}" if len(s.seeds) > 1 else
                 str(s.seeds[0]) if s.seeds else "-")
        note = "; ".join(s.flags) if s.status == "ok" else s.status
        out.append(("variant", [
            (f"={s.rank}" if s.tied else str(s.rank)) if s.rank else "-", s.variant, seeds,
            *(s.metrics[m.name].format(m.digits) if m.name in s.metrics else "n/a"
              for m in metrics),
            s.gate, fmt_params(s.trainable, s.frozen), fmt_duration(s.wall_s),
            fmt(s.samples_per_s, 1), _note(note),
        ]))
        jobs = [r for r in report.rows if r.variant == s.variant]
        if len(jobs) > 1:
            for r in sorted(jobs, key=lambda r: r.seed):
                row = r.metrics.get("model", {})
                note = "; ".join(r.flags) if r.has_results else (
                    r.status + (f": {r.reason}" if r.reason else ""))
                out.append(("seed", [
                    "", r.variant, str(r.seed),
                    *(fmt(row.get(m.name), m.digits) for m in metrics),
                    "", "", fmt_duration(r.wall_s), fmt(r.samples_per_s, 1), _note(note),
                ]))
    for ref in report.references:
        out.append(("reference", [
            "ref", ref.label, "", *(fmt(ref.metrics.get(m.name), m.digits) for m in metrics),
            "", "", "", "", ref.role,
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


PAIRED_COLUMNS = ("A", "B", "metric", "A - B", "A's advantage, 95% interval", "verdict",
                  "examples")


def paired_rows(report: Report, *, ranking_only: bool = False) -> list[list[str]]:
    """The paired differences as table cells: each pair of variants, then each variant
    against each floor row, per metric (the ranking metric's alone with ``ranking_only``)."""
    ranking = report.study.ranking
    out = []
    for c in report.comparisons:
        if ranking_only and (ranking is None or c.metric != ranking.name):
            continue
        metric = report.study.metric(c.metric)
        digits = metric.digits + 1
        seeds = f" x {c.seeds[0]}/{c.seeds[1]} seeds" if max(c.seeds) > 1 else ""
        verdict = {"better": "A better", "worse": "A worse", "tie": "no detectable difference"}
        out.append([c.a, c.b.removeprefix("floor:") + (" (floor)" if c.against_floor else ""),
                     metric.title, f"{c.difference:+.{digits}f}",
                     f"[{fmt(c.low, digits)}, {fmt(c.high, digits)}]", verdict[c.verdict],
                     f"{c.examples}{seeds}"])
    return out


def paired_sentence(report: Report) -> str:
    return ("Every variant is scored on the same held-out examples, so each pair is compared "
            "example by example: the interval is a paired bootstrap (examples, and seeds "
            "when there are several, drawn with replacement) of A's advantage, in the "
            "metric's own direction (for a target, how much nearer A is). A verdict needs "
            "the interval to exclude 0. The ranks show only what the verdicts on the ranking "
            "metric support: 1 + the variants that beat one; \"=\" marks a shared rank.")


def ranking_sentence(report: Report) -> str:
    """How the variants are ordered, and what a flag means, in one sentence or two."""
    metric = report.study.ranking
    if metric is None:
        return ("Variants in the config's order: the study declares no ranking metric "
                "(config.yaml `study.metrics`, `rank: true`).")
    way = (f"closest to {metric.target:g} is best" if metric.better == "target"
           else f"{metric.better} is better")
    return (f"Variants ranked by mean {metric.title} ({way}); with several seeds, mean ± 95% "
            "Student-t interval over n seeds. A variant that trails a floor row on any metric "
            "is flagged in the note column with those metrics; ceiling rows are shown, not "
            "flagged.")


PAIRS_SENTENCE = ("Each pair of variants: the code their jobs ran (the recorded commits; a "
                  "job without one stands in with its branch's tip), the config keys that "
                  "differ, and the metrics (the paired differences above).")


def params_lines(report: Report) -> list[str]:
    """The params table: each variant's recorded config, the keys that differ."""
    table = report.params
    if table is None:
        return []
    lines = ["## Params", "", summary_sentence(table), ""]
    if table.rows:
        lines += _md_table(("key", *table.columns), table_cells(table)) + [""]
    return lines


def _pair_lines(pair: PairDiff, params_above: bool) -> list[str]:
    lines = [f"### {pair.title}", "", f"- {side_line(pair.a)}", f"- {side_line(pair.b)}"]
    lines += [f"- {note}" for note in pair.notes] + [""]
    for code, what in ((pair.code, "commits"), (pair.folders, "variant folders")):
        if code is None:
            continue
        lines += [code_line(code, what), ""]
        if code.files:
            lines += _md_table(FILE_COLUMNS, file_cells(code, FILES_IN_MARKDOWN)) + [""]
    if pair.code.files or (pair.folders and pair.folders.files):
        lines += ["The patch: report.html (folded under this pair), or whole with `orch diff "
                  f"{pair.a.label} {pair.b.label} --run {pair.a.run_id}`.", ""]
    params = pair.params
    if params_above:
        lines += ["Params: the Params table above.", ""]
    elif params.rows:
        lines += [summary_sentence(params, "both"), ""]
        lines += _md_table(("key", *params.columns), table_cells(params)) + [""]
    elif params.columns:
        lines += [f"Params: the same recorded config ({params.equal} keys).", ""]
    return lines


def same_columns(report: Report, pair: PairDiff) -> bool:
    """Whether the report's params table is this pair's already (a report of two)."""
    return report.params is not None and set(report.params.columns) == set(pair.params.columns)


def pair_lines(report: Report) -> list[str]:
    """Per pair of variants: their code (file counts; the patch is in report.html) and
    their params difference."""
    if not report.pairs:
        return []
    lines = ["## Variant pairs", "", PAIRS_SENTENCE, ""]
    for pair in report.pairs:
        lines += _pair_lines(pair, params_above=same_columns(report, pair))
    return lines


def render_markdown(report: Report, out_dir: Path) -> str:
    lines = [f"# Comparison: run {report.run_id}", "",
             f"Preset `{report.preset}`, run status `{report.status}`. "
             + ranking_sentence(report), ""]
    if report.warnings:
        lines += ["**Warnings**", ""] + [f"- {_md_escape(w)}" for w in report.warnings] + [""]
    rows = []
    for kind, cells in table_rows(report):
        if kind == "variant":
            cells = [cells[0], f"**{cells[1]}**", *cells[2:]]
        elif kind == "reference":
            cells = [cells[0], f"*{cells[1]}*", *cells[2:]]
        rows.append(cells)
    lines += _md_table(table_columns(report), rows) + [""]
    lines += [" ".join(report.study.notes + (
        "gate: tests passed/total; params: trainable/total; samp/s: training samples per "
        "second; rows marked ref are the references (floor or ceiling in the note). Charts, "
        "pictures and diffs: report.html.",)), ""]
    paired = paired_rows(report)
    if paired:
        lines += ["## Paired differences", "", paired_sentence(report), ""]
        lines += _md_table(PAIRED_COLUMNS, paired) + [""]
    lines += params_lines(report) + pair_lines(report)
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
             r.preset, str(r.seed), str(r.environment.get("python", "-")),
             str(r.environment.get("device", "-")),
             r.status + (f": {r.reason}" if r.reason else "")] for r in report.rows]
    lines += _md_table(("job", "branch", "commit", "dirty", "preset", "seed", "python",
                        "device", "status"), prov) + [""]
    diffs = [r for r in report.rows if r.dirty and r.diff_path]
    if diffs:
        lines += ["Uncommitted changes: " + ", ".join(
            f"[{r.name}]({_rel(r.diff_path, out_dir)})" for r in diffs), ""]
    pictures = [(r, p) for r in report.rows for p in r.pictures]
    if pictures:
        lines += ["## Pictures", ""]
        lines += [f"![{r.name}: {p.name}]({_rel(p.path, out_dir)})" for r, p in pictures] + [""]
    return "\n".join(lines)
