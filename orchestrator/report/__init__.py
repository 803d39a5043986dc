"""The comparison report: merge a run's jobs (``build``), then render them.

- ``build``: ``build_report(run_dir) -> Report``, data only; statistics in ``stats``.
- ``markdown``: report.md and the table cells the terminal shares.
- ``charts``: SVG line and bar charts; ``html``: the self-contained report.html.
- ``terminal``: the Rich table `orch compare` prints.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from orchestrator.formats import write_text_atomic
from orchestrator.report.build import (
    JobRow,
    Picture,
    ReferenceRow,
    Report,
    VariantSummary,
    build_report,
    latest_run_with_results,
)
from orchestrator.report.html import render_html
from orchestrator.report.markdown import render_markdown
from orchestrator.report.stats import Interval, mean_interval, t975

__all__ = [
    "Interval", "JobRow", "Picture", "ReferenceRow", "Report", "VariantSummary",
    "build_report", "latest_run_with_results", "mean_interval", "t975", "write_report",
]


def write_report(report: Report, out_dir: Path) -> Report:
    """Write report.md and report.html to ``out_dir`` when there are results to show; the
    report with their paths set."""
    if not report.has_results:
        return report
    out_dir.mkdir(parents=True, exist_ok=True)
    written = replace(report, markdown_path=out_dir / "report.md",
                      html_path=out_dir / "report.html")
    write_text_atomic(out_dir / "report.md", render_markdown(written, out_dir))
    write_text_atomic(out_dir / "report.html", render_html(written))
    return written
