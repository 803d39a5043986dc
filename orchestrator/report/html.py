"""report.html: a single self-contained file (inline CSS, SVG charts, frame strips as base64
data URIs), so it can be mailed or archived with nothing external."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from orchestrator.report.build import REFERENCE_LABELS, Report, mean_curve
from orchestrator.report.charts import PALETTE, REF_COLOURS, Series, svg_bars, svg_lines
from orchestrator.report.markdown import TABLE_COLUMNS, fmt, table_rows

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
        mean = mean_curve(mine)
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
