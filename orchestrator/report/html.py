"""report.html: a single self-contained file (inline CSS, SVG charts, frame strips as base64
data URIs), so it can be mailed or archived with nothing external."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.report.build import Report, mean_curve
from orchestrator.report.charts import PALETTE, REF_PALETTES, Series, svg_bars, svg_lines
from orchestrator.report.code import CodeDiff, patch_lines
from orchestrator.report.markdown import (
    PAIRED_COLUMNS,
    PAIRS_SENTENCE,
    flagged,
    fmt,
    paired_rows,
    paired_sentence,
    ranking_sentence,
    same_columns,
    table_columns,
    table_rows,
)
from orchestrator.report.pairs import (
    FILE_COLUMNS,
    PairDiff,
    code_line,
    file_cells,
    metric_cells,
    metric_columns,
    side_line,
)
from orchestrator.report.params import ParamsTable, summary_sentence, table_cells

MAX_DIFF_CHARS = 200_000
MAX_IMAGE_BYTES = 8 << 20

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
figure{margin:1em 0}figcaption{color:#555}table.l td,table.l th{text-align:left}
pre .add{color:#116329;background:#e6ffec}pre .del{color:#82071e;background:#ffebe9}
pre .hunk{color:#6639ba}pre .meta{font-weight:600}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _colours(report: Report) -> dict[str, str]:
    return {s.variant: PALETTE[i % len(PALETTE)] for i, s in enumerate(report.variants)}


def _reference_colours(report: Report) -> dict[str, str]:
    colours, used = {}, {"floor": 0, "ceiling": 0}
    for ref in report.study.references:
        palette = REF_PALETTES.get(ref.role, REF_PALETTES["floor"])
        colours[ref.name] = palette[used.get(ref.role, 0) % len(palette)]
        used[ref.role] = used.get(ref.role, 0) + 1
    return colours


def _charts(report: Report) -> list[str]:
    colours, ref_colours = _colours(report), _reference_colours(report)
    ok = [r for r in report.rows if r.has_results]
    charts = []
    for metric in report.study.metrics:  # a bar chart per declared metric
        bars = [(s.variant, s.metrics[metric.name], colours[s.variant])
                for s in report.variants if s.scored and metric.name in s.metrics]
        refs = [(ref.title if ref.scope else ref.label, ref.metrics.get(metric.name, math.nan),
                 ref_colours.get(ref.name, "#888"), ref.scope) for ref in report.references]
        charts.append(svg_bars(bars, refs, title=f"{metric.title} per variant",
                               y_label=metric.title))
    # A line chart per series the results declare: each variant's mean curve, the
    # reference rows dashed.
    names = dict.fromkeys(name for r in ok for name in r.series)
    for name in names:
        first = next(r.series[name] for r in ok if name in r.series)
        curves: list[Series] = []
        for s in report.variants:
            mine = [r.series[name].rows.get("model", ()) for r in ok
                    if r.variant == s.variant and name in r.series]
            mean = mean_curve(mine)
            curves.append(Series(s.variant, tuple((i + 1.0, v) for i, v in enumerate(mean)),
                                 colours[s.variant]))
        curves += [Series(ref.label, tuple((i + 1.0, v) for i, v in
                                           enumerate(ref.series.get(name, ()))),
                          ref_colours.get(ref.name, "#888"), dashed=True)
                   for ref in report.references if ref.series.get(name)]
        y_label = report.study.metric(first.metric).title
        charts.append(svg_lines(curves, title=f"{y_label} per {first.index}",
                                x_label=first.index, y_label=y_label))
    first_seed: dict[str, int] = {}
    for r in report.rows:
        first_seed.setdefault(r.variant, r.seed)
    # One colour per variant; its later seeds dashed.
    epoch_loss = [Series(r.name, tuple((float(h.epoch), h.train_loss) for h in r.history
                                       if h.train_loss is not None),
                         colours.get(r.variant, "#888"), dashed=r.seed != first_seed[r.variant])
                  for r in ok if any(h.train_loss is not None for h in r.history)]
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


def _environment(env: dict[str, object]) -> str:
    """What the job ran on, as its results say (python, torch, device... whatever is there)."""
    return ", ".join(f"{key} {value}" for key, value in env.items() if value not in (None, ""))\
        or "-"


def _data_uri(path: str) -> str | None:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if len(data) > MAX_IMAGE_BYTES:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _params_table(table: ParamsTable, where: str = "every variant") -> str:
    text = f"<p>{_e(summary_sentence(table, where))}</p>"
    return text + (_table(("key", *table.columns), table_cells(table), "l")
                   if table.rows else "")


def _patch(patch: str) -> str:
    """A patch, escaped, its added and removed lines coloured."""
    return "\n".join(f'<span class="{kind}">{_e(line)}</span>' if kind else _e(line)
                     for kind, line in patch_lines(patch))


def _code(code: CodeDiff, what: str) -> list[str]:
    h = [f"<p>{_e(code_line(code, what))}</p>"]
    if code.files:
        h.append(_table(FILE_COLUMNS, file_cells(code), "l"))
    if code.patch:
        cut = "; cut short, `orch diff` shows it whole" if code.truncated else ""
        h.append(f"<details><summary>code diff, {_e(what)} ({_e(code.stat())}{_e(cut)})"
                 f"</summary><pre>{_patch(code.patch)}</pre></details>")
    return h


def _pair(pair: PairDiff, params_above: bool) -> list[str]:
    h = [f"<h3>{_e(pair.title)}</h3><ul>"
         + "".join(f"<li>{_e(line)}</li>" for line in (side_line(pair.a), side_line(pair.b),
                                                       *pair.notes)) + "</ul>"]
    h += _code(pair.code, "commits")
    if pair.folders is not None:
        h += _code(pair.folders, "variant folders")
    if params_above:
        h.append("<p>Params: the Params table above.</p>")
    elif pair.params.rows:
        h.append(_params_table(pair.params, "both"))
    elif pair.params.columns:
        h.append(f"<p>Params: the same recorded config ({pair.params.equal} keys).</p>")
    if any(m.paired or not math.isnan(m.a - m.b) for m in pair.metrics):
        h.append(_table(metric_columns(pair), metric_cells(pair)))
    return h


def render_html(report: Report) -> str:
    notes = " ".join(report.study.notes)
    h = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
         f"<title>orch report {_e(report.run_id)}</title><style>{CSS}</style></head><body>",
         f"<h1>Comparison: run {_e(report.run_id)}</h1>",
         f"<p>Preset <code>{_e(report.preset)}</code>, run status <code>{_e(report.status)}"
         f"</code>, generated {_e(time.strftime('%Y-%m-%d %H:%M'))}. "
         f"{_e(ranking_sentence(report))} {_e(notes)}</p>"]
    if report.warnings:
        h.append('<div class="warn"><b>Warnings</b><ul>' +
                 "".join(f"<li>{_e(w)}</li>" for w in report.warnings) + "</ul></div>")
    h.append("<h2>Results</h2><table><tr>"
             + "".join(f"<th>{_e(c)}</th>" for c in table_columns(report)) + "</tr>")
    for kind, cells in table_rows(report):
        note = cells[-1]
        red = kind != "reference" and flagged(note)
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells[:-1])
        h.append(f'<tr class="{kind}">{tds}<td class="{"flag" if red else ""}">'
                 f"{_e(note)}</td></tr>")
    h.append("</table>")
    paired = paired_rows(report)
    if paired:
        h.append(f"<h2>Paired differences</h2><p>{_e(paired_sentence(report))}</p><table><tr>"
                 + "".join(f"<th>{_e(c)}</th>" for c in PAIRED_COLUMNS) + "</tr>")
        for cells in paired:
            cls = "flag" if cells[5] == "A worse" and "(floor)" in cells[1] else ""
            h.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells[:-2])
                     + f'<td class="{cls}">{_e(cells[5])}</td><td>{_e(cells[6])}</td></tr>')
        h.append("</table>")
    if report.params is not None:
        h.append("<h2>Params</h2>" + _params_table(report.params))
    h.append("<h2>Charts</h2>" + "".join(_charts(report)))
    pictures = [(r, p) for r in report.rows for p in r.pictures]
    if pictures:
        h.append("<h2>Pictures</h2>")
        for r, picture in pictures:
            uri = _data_uri(picture.path)
            if uri:
                caption = f": {picture.caption}" if picture.caption else ""
                h.append(f'<figure><img class="strip" alt="{_e(picture.name)} of {_e(r.name)}" '
                         f'src="{uri}"><figcaption>{_e(r.name)} (seed {r.seed}), '
                         f"{_e(picture.name)}{_e(caption)}</figcaption></figure>")
    if report.pairs:
        h.append(f"<h2>Variant pairs</h2><p>{_e(PAIRS_SENTENCE)}</p>")
        for pair in report.pairs:
            h += _pair(pair, same_columns(report, pair))
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
                 f"<tr><th>environment</th><td>{_e(_environment(env))}</td></tr>"
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
