"""report.md, and the table cells the markdown and the terminal table share."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.report.build import REFERENCE_LABELS, Report
from orchestrator.ui import fmt_duration

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
            s.gate, fmt_params(s.trainable, s.frozen), fmt_duration(s.wall_s),
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
                    "", "", fmt_duration(r.wall_s), fmt(r.samples_per_s, 1), _note(note),
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
