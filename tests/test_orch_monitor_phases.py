"""The live view through the whole run: a row per shared job (step, loss, held-out figure,
ETA; cached ones as such) and per gate (pytest's percentage, then the counts), in the live
table and as plain lines; what the driver records for them; liveness and interruption."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import phase_jobs
from orchestrator import state as st
from orchestrator.cli.main import app
from orchestrator.client import Run
from orchestrator.formats import dump_run, parse_run
from orchestrator.monitor import LiveView, render_run
from orchestrator.phase_view import gate_percent
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import PROJECT_ROOT

runner = CliRunner()
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


def capture(width: int = 140) -> Console:
    return Console(width=width, no_color=True, record=True, file=io.StringIO())


def text_of(renderable: object, width: int = 140) -> str:
    console = capture(width)
    console.print(renderable)
    return console.export_text()


@pytest.fixture(scope="module")
def tokenizer_events(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The events.jsonl lines of a real tokenizer pretraining at the micro preset (seconds)."""
    out = tmp_path_factory.mktemp("tokenizer") / "work"
    subprocess.run([sys.executable, "-m", "shared.magvit.pretrain", "--preset", "micro",
                    "--output", str(out), "--threads", "1"], cwd=PROJECT_ROOT, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert (out / "tokenizer.ckpt").exists()
    return (out / "events.jsonl").read_text().splitlines(keepends=True)


def shared_row(out: Path, stage: st.Stage, **fields: object) -> st.PhaseJob:
    return st.PhaseJob(name="shared:tokenizer", phase="shared", stage=stage,
                       output_dir=str(out), log_path=str(out.with_suffix(".log")),
                       **fields)  # type: ignore[arg-type]


def run_with(*rows: st.PhaseJob, status: str = "running") -> st.RunState:
    return st.RunState(run_id="r1", preset="micro", started=0.0, status=status,
                       phase_jobs=list(rows), orchestrator_pid=os.getpid())


def test_a_real_pretrainings_events_make_a_moving_row(tokenizer_events: list[str],
                                                      tmp_path: Path) -> None:
    kinds = [json.loads(line)["event"] for line in tokenizer_events]
    assert kinds[0] == "start" and kinds[-2:] == ["eval", "end"] and "progress" in kinds
    first_progress = kinds.index("progress")
    running = tmp_path / "running"
    running.mkdir()
    (running / "events.jsonl").write_text("".join(tokenizer_events[:first_progress + 1]))
    running.with_suffix(".log").write_text("step     2 | loss -0.4325 | train psnr 12.59 dB\n")
    row = shared_row(running, st.Stage.training, started=0.0)
    view = LiveView(capture(), live=False)
    view.poll(run_with(row))
    step = json.loads(tokenizer_events[first_progress])["time"]
    text = text_of(view.render(run_with(row), now=step))
    line = next(x for x in text.splitlines() if x.startswith("shared:tokenizer"))
    assert "running" in line and "cpu" in line and " 33%" in line  # step 2 of 6
    assert "step 2/6" in text and "ETA" in text and "PSNR" not in text
    assert "│ step     2 | loss -0.4325" in text  # its log's last line, under the table

    done = tmp_path / "done"
    done.mkdir()
    (done / "events.jsonl").write_text("".join(tokenizer_events))
    row = shared_row(done, st.Stage.done, started=0.0, finished=9.0)
    view.poll(run_with(row))
    text = text_of(view.render(run_with(row), now=10.0))
    line = next(x for x in text.splitlines() if x.startswith("shared:tokenizer"))
    assert "done" in line and "100%" in line and "9.0s" in line
    psnr = json.loads(tokenizer_events[-2])["metrics"]["psnr"]
    assert f"6 steps · PSNR {psnr:.2f} dB" in text and "ETA" not in text


def test_cached_queued_and_failed_shared_rows(tmp_path: Path) -> None:
    cached_dir = tmp_path / "cached"
    with Run(cached_dir) as events:  # an artifact made by an earlier run, events and all
        events.eval(epoch=1, metrics={"accuracy": 0.8125, "loss": 0.5})
    rows = [
        st.PhaseJob(name="shared:i3d", phase="shared", stage=st.Stage.done, cached=True,
                    output_dir=str(cached_dir)),
        st.PhaseJob(name="shared:slowfast", phase="shared", stage=st.Stage.queued,
                    output_dir=str(tmp_path / "queued")),
        st.PhaseJob(name="shared:tokenizer", phase="shared", stage=st.Stage.failed,
                    output_dir=str(tmp_path / "failed"), started=0.0, finished=3.0,
                    reason="shared job tokenizer (tiny) failed: exit 1: no videos"),
    ]
    view = LiveView(capture(), live=False)
    view.poll(run_with(*rows))
    text = text_of(view.render(run_with(*rows), now=5.0))
    lines = text.splitlines()
    assert "cached" in next(x for x in lines if x.startswith("shared:i3d"))
    assert "artifact of an earlier run · accuracy 0.812" in text
    assert "waiting for a core" in next(x for x in lines if x.startswith("shared:slowfast"))
    assert "✗ shared:tokenizer failed: shared job tokenizer (tiny) failed: exit 1" in text
    assert "shared jobs running" not in text  # the rows say it; no header line besides


def test_gate_rows_show_pytests_percentage_then_the_counts(tmp_path: Path) -> None:
    assert gate_percent("..F.                                     [ 40%]") == 40
    assert gate_percent("3 passed in 0.12s") is None
    log = tmp_path / "gate.log"
    log.write_text("$ python -m pytest branches/alpha/tests -q\n..F.        [ 40%]\n")
    running = st.PhaseJob(name="gate:alpha", phase="gate", stage=st.Stage.gating,
                          output_dir=str(tmp_path), log_path=str(log), started=0.0)
    result = st.GateResult(False, [st.TestOutcome("t::a", "passed"),
                                   st.TestOutcome("t::b", "failed", message="assert 0")])
    failed = st.PhaseJob(name="gate:beta", phase="gate", stage=st.Stage.gate_failed,
                         started=0.0, finished=2.5, gate=result, reason="gate: t::b failed")
    view = LiveView(capture(), live=False)
    view.poll(run_with(running, failed))
    lines = text_of(view.render(run_with(running, failed), now=4.0)).splitlines()
    alpha = next(x for x in lines if x.startswith("gate:alpha"))
    assert "gating" in alpha and "cpu" in alpha and "█████░░░░░░░░░  40%" in alpha
    assert "4.0s" in alpha
    beta = next(x for x in lines if x.startswith("gate:beta"))
    assert "failed" in beta and "1/2 passed (1 failed)" in beta and "2.5s" in beta


def test_plain_lines_for_shared_jobs_and_gates(tmp_path: Path) -> None:
    console = capture()
    view = LiveView(console, live=False, plain_interval=10.0)
    out = tmp_path / "work"
    events = Run(out)
    events.start(preset="tiny", device="cpu", epochs=1)
    row = shared_row(out, st.Stage.queued)
    gate = st.PhaseJob(name="gate:alpha", phase="gate", stage=st.Stage.gating, started=0.0)
    with view:
        view.update(run_with(row), now=0.0)
        row.stage, row.started = st.Stage.training, 0.0
        events.progress(epoch=1, step=10, loss=0.5, total_steps=100, eta_s=90.0)
        view.update(run_with(row), now=1.0)
        events.progress(epoch=1, step=20, loss=0.25, total_steps=100, eta_s=80.0)
        view.update(run_with(row), now=2.0)  # a new step, but within the interval: no line
        view.update(run_with(row), now=12.0)  # now it is due
        events.eval(epoch=1, metrics={"psnr": 21.5, "ssim": 0.7})
        row.stage, row.finished = st.Stage.done, 30.0
        view.update(run_with(row, gate), now=30.0)
        gate.stage, gate.finished = st.Stage.done, 33.0
        gate.gate = st.GateResult(True, [st.TestOutcome("t::a", "passed")])
        view.update(run_with(row, gate), now=33.0)
    lines = console.export_text().splitlines()
    assert len(lines) == 6, lines
    assert lines[0].endswith("shared:tokenizer queued")
    assert "shared:tokenizer running step 10/100 loss 0.5000 ETA 1m30s" in lines[1]
    assert "shared:tokenizer running step 20/100 loss 0.2500 ETA 1m20s" in lines[2]
    assert "shared:tokenizer done 20 steps loss 0.2500 PSNR 21.50 dB in 30.0s" in lines[3]
    assert lines[4].endswith("gate:alpha gating")
    assert lines[5].endswith("gate:alpha passed 1/1 passed in 33.0s")


def test_rows_survive_state_json_and_a_dead_orchestrator_fails_the_unfinished(
    tmp_path: Path,
) -> None:
    rows = [shared_row(tmp_path, st.Stage.training, pid=DEAD_PID, started=0.0),
            st.PhaseJob(name="gate:alpha", phase="gate", stage=st.Stage.done)]
    run = run_with(*rows)
    assert parse_run(dump_run(run), Path("state.json")) == run
    run.orchestrator_pid = DEAD_PID
    seen = st.refresh_liveness(run)
    assert seen.status == st.RunStatus.died
    assert seen.phase_jobs[0].stage == st.Stage.failed
    assert seen.phase_jobs[0].reason == "orchestrator died"
    assert seen.phase_jobs[1].stage == st.Stage.done


def test_rows_left_running_by_an_interruption_are_cancelled() -> None:
    run = run_with(st.PhaseJob(name="shared:a", phase="shared", stage=st.Stage.training),
                   st.PhaseJob(name="shared:b", phase="shared", stage=st.Stage.queued),
                   st.PhaseJob(name="shared:c", phase="shared", stage=st.Stage.done),
                   st.PhaseJob(name="gate:x", phase="gate", stage=st.Stage.gating))
    with pytest.raises(KeyboardInterrupt), phase_jobs.closed_on_exit(run, "shared"):
        raise KeyboardInterrupt
    assert [r.stage for r in run.phase_jobs] == [st.Stage.cancelled, st.Stage.cancelled,
                                                 st.Stage.done, st.Stage.gating]
    assert run.phase_jobs[0].reason == "interrupted (Ctrl-C)"
    with pytest.raises(RuntimeError), phase_jobs.closed_on_exit(run, "gate"):
        raise RuntimeError("disk full")
    assert run.phase_jobs[3].stage == st.Stage.failed
    assert run.phase_jobs[3].reason == "orch stopped: disk full"


def test_a_real_train_records_and_prints_its_shared_jobs_and_gates(
    spawned: Path, orch_env: Path,
) -> None:
    result = runner.invoke(app, ["train", "--plain"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    for expected in ("shared:tokenizer queued", "shared:tokenizer running",
                     "shared:tokenizer done", "gate:alpha gating",
                     "gate:alpha passed 2/2 passed", "gate:beta passed 2/2 passed"):
        assert any(expected in line for line in lines), (expected, result.stderr)
    assert (next(i for i, x in enumerate(lines) if "shared:tokenizer done" in x)
            < next(i for i, x in enumerate(lines) if "gate:alpha gating" in x)
            < next(i for i, x in enumerate(lines) if "alpha training" in x))
    run = st.load_run(orch_env)
    assert run is not None
    rows = {r.name: r for r in run.phase_jobs}
    assert list(rows) == ["shared:tokenizer", "gate:alpha", "gate:beta"]
    tokenizer = rows["shared:tokenizer"]
    assert tokenizer.stage == st.Stage.done and tokenizer.exit_code == 0
    assert not tokenizer.cached and tokenizer.started and tokenizer.finished
    # Published: its folder is now the cached artifact's, and its log is beside it.
    assert Path(tokenizer.output_dir) / "tokenizer.ckpt" == Path(run.artifacts["tokenizer"])
    assert Path(tokenizer.log_path).read_text().startswith("$ ")
    view = LiveView(capture(), live=False)
    view.poll(run)
    frame = text_of(view.render(run))
    row = next(x for x in frame.splitlines() if x.startswith("shared:tokenizer"))
    assert "done" in row and "100%" in row and "steps" not in frame  # it writes no events
    gate = rows["gate:alpha"]
    assert gate.stage == st.Stage.done and gate.gate is not None and gate.gate.passed
    assert Path(gate.log_path).name == "gate.log" and Path(gate.log_path).exists()

    again = runner.invoke(app, ["train", "--plain"])
    assert again.exit_code == 0, again.output
    assert "shared:tokenizer cached" in again.stderr
    rerun = st.load_run(orch_env)
    assert rerun is not None and rerun.phase_jobs[0].cached
    assert rerun.phase_jobs[0].output_dir == tokenizer.output_dir


def test_render_run_without_rows_still_names_the_running_shared_jobs() -> None:
    run = st.RunState(run_id="r9", preset="tiny", started=0.0, shared_running=["tokenizer"])
    assert "shared jobs running (the variants wait for them): tokenizer" in text_of(
        render_run(run, now=1.0))
