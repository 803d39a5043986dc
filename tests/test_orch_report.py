"""orch compare: results.json validation, seed statistics, report.md / report.html, --json."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import state as st
from orchestrator.formats import CorruptFile, load_results
from orchestrator.report import build_report, mean_interval, t975, write_report

FRAMES = 4


def metrics_row(psnr: float, ssim: float, mse: float, mae: float) -> dict[str, Any]:
    per_frame = {"psnr": [psnr + 1.5 - i for i in range(FRAMES)],
                 "ssim": [ssim] * FRAMES, "mse": [mse] * FRAMES, "mae": [mae] * FRAMES}
    return {"mse": mse, "mae": mae, "psnr": psnr, "ssim": ssim,
            "mse_per_pixel": mse / 768, "per_frame": per_frame}


def results_doc(variant: str, seed: int, psnr: float, ssim: float, *,
                oracle_psnr: float = 30.0) -> dict[str, Any]:
    """A results.json as requirements.md section 3.2 describes it."""
    return {
        "schema": 1, "variant": variant, "preset": "micro", "seed": seed, "status": "success",
        "config": {"epochs": 2, "lr": 1e-3},
        "environment": {"python": "3.11.7", "torch": "2.13.0", "device": "cpu", "cuda": None,
                        "platform": "Linux", "threads": 1},
        "parameters": {"trainable": 123_456, "frozen": 2_000_000},
        "history": [{"epoch": e, "train_loss": 1.0 / (e + seed + 1), "seconds": 3.0,
                     "eval": {"mse": 9.0, "mae": 20.0, "psnr": psnr - 1 + e, "ssim": ssim}}
                    for e in (1, 2)],
        "final": {"model": metrics_row(psnr, ssim, 10.0 + seed, 30.0),
                  "black": metrics_row(8.0, 0.05, 300.0, 200.0),
                  "copy_last": metrics_row(21.0, 0.70, 40.0, 60.0),
                  "oracle": metrics_row(oracle_psnr, 0.90, 5.0, 10.0)},
        "timings": {"wall_s": 60.0 + seed, "train_s": 50.0, "samples_per_s": 100.0,
                    "peak_memory_mb": None},
        "artifacts": {"checkpoint": "checkpoints/last.pt", "frames": "frames.png"},
    }


# (variant, seed) -> (psnr, ssim); "joint" at seed 1 is corrupt on disk.
SCORES = {("baseline", 0): (24.0, 0.80), ("baseline", 1): (26.0, 0.84),
          ("joint", 0): (20.0, 0.60), ("joint", 1): (20.5, 0.62),
          ("slowfast", 0): (23.0, 0.75)}


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished run: baseline and joint at 2 seeds, slowfast at 1 seed with a corrupt
    results.json, and a failed job with no results at all."""
    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    run = st.RunState(run_id="20260101-120000-1", preset="micro", started=1.0, finished=9.0,
                      status="done")
    base = st.run_dir(home, run.run_id)
    gate = st.GateResult(passed=True, seconds=4.0, tests=[
        st.TestOutcome("test_tokenizer_loads", "passed", 1.0),
        st.TestOutcome("test_model_builds", "passed", 1.0)])
    for (variant, seed), (psnr, ssim) in SCORES.items():
        name = f"{variant}-s{seed}"
        out = base / name
        out.mkdir(parents=True)
        doc = results_doc(variant, seed, psnr, ssim)
        (out / "results.json").write_text(json.dumps(doc))
        Image.new("RGB", (32, 8), (seed * 90, 40, 200)).save(out / "frames.png")
        events = [{"event": "start", "time": 1.0, "epochs": 2, "total_steps": 4},
                  *({"event": "progress", "time": 1.0 + s, "epoch": 1 + s // 3, "step": s,
                     "loss": 1.0 / s, "total_steps": 4} for s in range(1, 5))]
        (out / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        diff = out / "diff.patch"
        diff.write_text("--- a/x.py\n+++ b/x.py\n+print('<hi>')\n")
        run.jobs.append(st.JobState(variant=variant, seed=seed, preset="micro", name=name,
                                    branch=f"orch/{variant}", commit="abcdef1234567",
                                    dirty=variant == "joint", diff_path=str(diff),
                                    stage=st.Stage.done, output_dir=str(out), gate=gate))
    (base / "slowfast-s0" / "results.json").write_text('{"schema": 1, "variant": "slowf')
    failed = base / "failing-s0"
    failed.mkdir()
    run.jobs.append(st.JobState(variant="failing", seed=0, name="failing-s0", preset="micro",
                                stage=st.Stage.failed, reason="out of memory on cpu",
                                output_dir=str(failed)))
    st.save_run(home, run)
    return base


def test_t_quantiles_match_tables() -> None:
    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    assert 2.021 < t975(35) < 2.042 and t975(40) == pytest.approx(2.021)
    assert t975(10**9) == pytest.approx(1.960, abs=1e-3)


def test_mean_interval_by_hand() -> None:
    values = [24.0, 26.0, 25.0]
    # mean 25, s = 1, half width = t(2) * 1 / sqrt(3)
    iv = mean_interval(values)
    assert iv.mean == 25.0 and iv.n == 3
    assert iv.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert mean_interval([7.0]).half_width is None
    assert mean_interval([]).format(2) == "n/a"


def test_load_results_names_the_bad_field(tmp_path: Path) -> None:
    good = tmp_path / "results.json"
    good.write_text(json.dumps(results_doc("baseline", 3, 24.0, 0.8)))
    res = load_results(good)
    # A schema-1 file reads as schema 2: rows under metrics, per-frame lists as series,
    # the strip as an image.
    assert res.seed == 3 and res.metrics["copy_last"]["psnr"] == 21.0
    assert res.read_from_schema == 1 and res.schema_version == 2
    assert res.series["psnr_per_frame"].rows["model"][0] == 25.5
    assert res.series["psnr_per_frame"].index == "future frame"
    assert res.image_path("frames") == tmp_path / "frames.png"

    doc = results_doc("baseline", 3, 24.0, 0.8)
    del doc["final"]["oracle"]["ssim"]
    good.write_text(json.dumps(doc))
    with pytest.raises(CorruptFile, match=r"final\.oracle\.ssim"):
        load_results(good)
    doc = results_doc("baseline", 3, 24.0, 0.8) | {"schema": 3}
    good.write_text(json.dumps(doc))
    with pytest.raises(CorruptFile, match="schema 3"):
        load_results(good)
    doc = results_doc("baseline", 3, 24.0, 0.8)
    doc["parameters"]["trainable"] = "many"
    good.write_text(json.dumps(doc))
    with pytest.raises(CorruptFile, match="parameters.trainable"):
        load_results(good)


def test_build_report_merges_and_warns(run_dir: Path) -> None:
    report = build_report(run_dir)
    corrupt = run_dir / "slowfast-s0" / "results.json"
    assert any(str(corrupt) in w and "not valid JSON" in w for w in report.warnings)

    by_name = {s.variant: s for s in report.variants}
    base, joint = by_name["baseline"], by_name["joint"]
    psnr, ssim = base.metrics["psnr"], base.metrics["ssim"]
    assert base.seeds == (0, 1) and psnr.n == 2
    # two seeds: mean 25, s = sqrt(2), half width = 12.706 * sqrt(2) / sqrt(2)
    assert psnr.mean == pytest.approx(25.0)
    assert psnr.half_width == pytest.approx(12.706)
    assert ssim.half_width == pytest.approx(12.706 * 0.02)
    # schema-1 results and no declaration: the video study's (PSNR ranks)
    assert report.study.ranking is not None and report.study.ranking.name == "psnr"
    # ranked by PSNR; joint (20.25) lost to copy-last (21) and says so
    assert [s.variant for s in report.variants][:2] == ["baseline", "joint"]
    assert base.rank == 1 and joint.rank == 2 and not base.flags
    # trailed on every metric it loses, each in its own direction (MSE, MAE: lower wins)
    assert joint.flags == ("below copy-last (PSNR, SSIM)",)
    # jobs that produced nothing stay visible, unranked, with their reason
    assert by_name["slowfast"].rank is None and by_name["slowfast"].status.startswith("unread")
    assert "out of memory" in by_name["failing"].status
    # references agree across jobs, so one row each
    assert [r.label for r in report.references] == ["black", "copy-last", "oracle"]
    row = next(r for r in report.rows if r.name == "baseline-s1")
    assert row.step_losses[-1] == (4, 0.25) and row.gate_tests[0].name == "test_tokenizer_loads"


def test_oracle_differs_per_variant_gets_a_row_each(run_dir: Path) -> None:
    path = run_dir / "joint-s0" / "results.json"
    doc = json.loads(path.read_text())
    doc["final"]["oracle"]["psnr"] = 28.0  # schema 1: the rows are under "final"
    path.write_text(json.dumps(doc))
    labels = [r.label for r in build_report(run_dir).references]
    assert "oracle (baseline)" in labels and "oracle (joint)" in labels and "black" in labels


def test_report_files(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = write_report(build_report(run_dir), out)
    assert report.markdown_path == out / "report.md" and report.html_path == out / "report.html"
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert any("**baseline**" in line and "25.00 ± 12.71" in line and "n=2" in line
               for line in table)
    for ref in ("*black*", "*copy-last*", "*oracle*"):
        assert any(line.startswith("| ref |") and ref in line for line in table)
    assert any("**joint**" in line and "below copy-last" in line for line in table)
    assert "not valid JSON" in md

    page = (out / "report.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") >= 4  # PSNR bars, SSIM bars, per-frame PSNR, losses
    assert "PSNR per future frame" in page and "loss per step" in page
    assert page.count('src="data:image/png;base64,') == 4  # one strip per readable job
    assert "predicted future" in page  # the strip's caption, from the results
    assert "<details>" in page and "print(&#x27;&lt;hi&gt;&#x27;)" in page  # escaped diff
    assert "test_model_builds" in page and "out of memory on cpu" in page


def test_no_results_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    report = write_report(build_report(tmp_path), tmp_path)
    assert not report.has_results and report.markdown_path is None
    assert not (tmp_path / "report.md").exists()


def test_run_dir_without_state_uses_results_files(tmp_path: Path) -> None:
    for seed, psnr in ((0, 22.0), (1, 24.0)):
        out = tmp_path / f"baseline-s{seed}"
        out.mkdir()
        (out / "results.json").write_text(json.dumps(results_doc("baseline", seed, psnr, 0.8)))
    report = build_report(tmp_path)
    (summary,) = report.variants
    assert summary.variant == "baseline"
    assert summary.metrics["psnr"].mean == pytest.approx(23.0)


# ---------------------------------------------------------------------------- the command


def compare_app() -> Any:
    import typer

    from orchestrator.cli.compare import compare

    app = typer.Typer()
    app.command("compare")(compare)
    app.command("noop")(lambda: None)  # two commands, so "compare" stays a subcommand
    return app


def test_compare_json_matches_report(run_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no config here: compare goes by the results, as below
    # A later gate-only run has no results: compare without --run skips it.
    gates_only = st.RunState(run_id="20260102-090000-2", preset="micro", started=2.0,
                             status="failed", command="test-all", jobs=[
                                 st.JobState(variant="baseline", stage=st.Stage.gate_failed)])
    st.save_run(run_dir.parent.parent, gates_only)
    result = CliRunner().invoke(compare_app(), ["compare", "--json", "--out",
                                                str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "20260101-120000-1"
    base = next(v for v in data["variants"] if v["variant"] == "baseline")
    psnr = base["metrics"]["psnr"]
    assert psnr["mean"] == pytest.approx(25.0) and psnr["n"] == 2
    assert psnr["half_width"] == pytest.approx(12.706)
    assert any("slowfast-s0" in w for w in data["warnings"])
    assert data["html_path"].endswith("report.html")
    assert [r["label"] for r in data["references"]] == ["black", "copy-last", "oracle"]
    same = build_report(run_dir).to_dict()  # the records the report renders
    assert data["variants"] == same["variants"] and data["references"] == same["references"]
    assert [r["name"] for r in data["rows"]] == [r["name"] for r in same["rows"]]


def test_compare_table_and_errors(run_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.errors import OrchError
    from orchestrator.report.terminal import results_table

    console = Console(width=120, no_color=True, record=True, file=io.StringIO())
    console.print(results_table(build_report(run_dir)))
    text = console.export_text()
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if "baseline" in line and "n=2" in line)
    assert "25.00" in lines[i] and "± 12.71" in lines[i + 1]  # the interval sits below
    assert any("joint" in line and "below copy-last" in line for line in lines)
    assert any("ref" in line and "copy-last" in line and "21.00" in line for line in lines)
    assert max(len(line) for line in lines) <= 120  # fits a common terminal

    runner = CliRunner()
    result = runner.invoke(compare_app(), ["compare", "--run", "20260101-120000-1",
                                           "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.stdout and (tmp_path / "o" / "report.md").exists()
    assert ("joint trails copy-last (a floor) on PSNR 20.25 ± 3.18 vs 21.00, SSIM "
            "0.610 ± 0.127 vs 0.700") in " ".join(result.stdout.split())  # as wrapped

    missing = runner.invoke(compare_app(), ["compare", "--run", "nope"])
    assert isinstance(missing.exception, OrchError) and "nope" in str(missing.exception)
    assert "20260101-120000-1" in str(missing.exception)  # names the runs that exist
    monkeypatch.setenv(st.HOME_ENV, str(tmp_path / "empty"))
    empty = runner.invoke(compare_app(), ["compare"])
    assert isinstance(empty.exception, OrchError) and "no run" in str(empty.exception)


def test_compare_run_without_results_fails_clearly(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.cli.compare import NoResults

    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    run = st.RunState(run_id="r1", preset="micro", started=1.0, status="failed", jobs=[
        st.JobState(variant="baseline", stage=st.Stage.gate_failed, reason="gate failed",
                    output_dir=str(tmp_path / "none"))])
    st.save_run(home, run)
    result = CliRunner().invoke(compare_app(), ["compare"])
    assert isinstance(result.exception, NoResults) and result.exception.exit_code == 5
    assert "r1" in str(result.exception)


def test_loss_chart_keeps_a_series_that_goes_below_zero() -> None:
    # joint-i3d's loss includes the LFQ entropy term and is negative: a log axis would drop
    # its line without a word, so the chart falls back to a linear axis.
    from orchestrator.report.charts import Series, svg_lines

    series = [Series("baseline", ((1.0, 100.0), (2.0, 1.0)), "#111"),
              Series("joint-i3d", ((1.0, -0.7), (2.0, -0.9)), "#222")]
    positive = svg_lines(series[:1], title="t", x_label="x", y_label="y", log_y=True)
    assert ">10<" in positive  # a log axis: a tick at each decade
    chart = svg_lines(series, title="train loss per epoch", x_label="epoch", y_label="loss",
                      log_y=True)
    assert chart.count("<polyline") == 2 and "joint-i3d" in chart
    assert ">10<" not in chart  # linear: ticks at even steps of 20
