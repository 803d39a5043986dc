"""orch monitor: incremental events tailing, the pure render function, plain lines, the loop."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator import state as st
from orchestrator.formats import (
    EndEvent,
    ErrorEvent,
    EventTail,
    ProgressEvent,
    StartEvent,
    dump_run,
    parse_run,
)
from orchestrator.monitor import (
    SPARK,
    LiveView,
    LogTail,
    bar,
    render_jobs,
    render_run,
    sparkline,
    watch,
)
from orchestrator.progress import JobProgress, read_progress


def line(**fields: Any) -> str:
    return json.dumps(fields) + "\n"


def progress_line(step: int, *, loss: float, epoch: int = 1, t: float = 100.0) -> str:
    return line(event="progress", time=t + step, epoch=epoch, step=step, total_steps=10,
                loss=loss, samples_per_s=50.0, eta_s=20.0, lr=1e-3, memory_mb=900.0)


def capture(width: int = 120) -> Console:
    return Console(width=width, no_color=True, record=True, file=io.StringIO())


# ---------------------------------------------------------------------------- tailing


def test_event_tail_is_incremental_and_keeps_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # no file yet: nothing, no error
    start = line(event="start", time=1.0, variant="baseline", preset="micro", seed=0,
                 device="cpu", epochs=2, steps_per_epoch=5, total_steps=10,
                 resumed_from_epoch=0, pid=42)
    half = progress_line(1, loss=2.0)
    path.write_text(start + half[:25])  # the writer is mid-line
    events = tail.read()
    assert [type(e) for e in events] == [StartEvent] and tail.offset == path.stat().st_size
    with open(path, "a") as f:
        f.write(half[25:] + line(event="gpu_temperature", time=2.0, celsius=60)  # unknown kind
                + "{not json\n" + line(event="progress", time=3.0, step=2)  # missing fields
                + progress_line(3, loss=1.0, epoch=2, t=0.0))
    events = tail.read()
    assert [type(e) for e in events] == [ProgressEvent, ProgressEvent]
    assert [e.step for e in events if isinstance(e, ProgressEvent)] == [1, 3]
    assert tail.bad_lines == 2  # the corrupt line and the one missing required fields
    assert tail.read() == []  # nothing new, nothing re-read
    with open(path, "a") as f:
        f.write(line(event="end", time=9.0, status="success", wall_s=8.0,
                     results="results.json", extra="ignored"))
    (end,) = tail.read()
    assert isinstance(end, EndEvent) and end.wall_s == 8.0


def test_event_tail_restarts_when_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(progress_line(1, loss=3.0) + progress_line(2, loss=2.0))
    tail = EventTail(path)
    assert len(tail.read()) == 2
    path.write_text(progress_line(1, loss=9.0))  # a fresh run truncated the file
    (event,) = tail.read()
    assert isinstance(event, ProgressEvent) and event.loss == 9.0


def test_progress_fold_and_null_losses(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(progress_line(1, loss=2.0) + progress_line(2, loss=1.0)
                    + line(event="progress", time=200.0, epoch=1, step=3, loss=None)
                    + line(event="error", time=201.0, message="loss diverged", kind="exception",
                           traceback=""))
    p = read_progress(path)
    assert p.step == 3 and p.total_steps == 10 and p.memory_mb == 900.0
    assert p.step_losses[:2] == [(1, 2.0), (2, 1.0)] and p.error is not None
    assert p.error.message == "loss diverged"
    assert p.eta_at(now=p.updated or 0.0) is None  # the last event carried no ETA
    p2 = JobProgress()
    p2.apply_all(EventTail(path).read()[:2])
    assert p2.eta_at(now=102.0 + 5.0) == pytest.approx(15.0)  # counted down since reported
    assert p2.eta_at(now=10_000.0) == 0.0


def test_log_tail_reads_only_when_the_file_grows(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    path.write_text("loading\nepoch 1 \x1b[32mok\x1b[0m\n\n")
    log = LogTail(path)
    assert log.read() and log.line == "epoch 1 ok"
    assert not log.read()
    with open(path, "a") as f:
        f.write("step 3 10%\rstep 4 20%\n")
    assert log.read() and log.line == "step 4 20%"


# ---------------------------------------------------------------------------- rendering


def test_sparkline_and_bar() -> None:
    assert sparkline([4.0, 3.0, 2.0, 1.0]) == "█▆▃▁"  # levels 7, 4.67, 2.33, 0 rounded
    assert sparkline([1.0] * 3) == SPARK[3] * 3
    assert sparkline([]) == "" and len(sparkline(list(range(50)), width=12)) == 12
    assert bar(0.5, width=10) == "█████░░░░░" and bar(2.0, width=4) == "████"


def fixed_jobs() -> tuple[list[st.JobState], dict[str, JobProgress], dict[str, str]]:
    jobs = [
        st.JobState(variant="baseline", seed=0, name="baseline-s0", branch="orch/baseline",
                    commit="abcdef1234567", stage=st.Stage.training, device="cpu",
                    started=900.0),
        st.JobState(variant="joint-i3d", seed=0, name="joint-i3d-s0", branch="orch/joint-i3d",
                    commit="1234567abcdef", dirty=True, stage=st.Stage.failed, device="cuda:0",
                    started=900.0, finished=950.0, exit_code=1,
                    reason="out of memory on cuda:0"),
        st.JobState(variant="slowfast", name="slowfast", stage=st.Stage.queued,
                    gate=st.GateResult(True, [st.TestOutcome("test_a", "passed")])),
        st.JobState(variant="lazy", name="lazy", stage=st.Stage.cancelled,
                    reason="stopped by the user"),
    ]
    p = JobProgress()
    p.apply(StartEvent(time=900.0, variant="baseline", preset="tiny", seed=0, device="cpu",
                       epochs=10, steps_per_epoch=40, total_steps=400, pid=1))
    for step in range(1, 121):
        p.apply(ProgressEvent(time=900.0 + step / 2, epoch=1 + (step - 1) // 40, step=step,
                              total_steps=400, loss=1.0 / (1 + step * 0.05), samples_per_s=55.5,
                              eta_s=140.0, lr=1e-3, memory_mb=812.0))
    logs = {"baseline-s0": "epoch 3 step 120 loss 0.143",
            "joint-i3d-s0": "RuntimeError: CUDA out of memory"}
    return jobs, {"baseline-s0": p}, logs


def test_render_jobs_shows_stage_progress_sparkline_and_failures() -> None:
    jobs, progress, logs = fixed_jobs()
    console = capture()
    console.print(render_jobs(jobs, progress, logs, now=1000.0))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(x) for x in lines) <= 120
    row = next(x for x in lines if x.startswith("baseline-s0"))
    assert "training" in row and "cpu" in row and "30%" in row and "0.1429" in row
    assert "55.5" in row and "812 MB" in row and "1m40s" in row  # elapsed since start
    below = lines[lines.index(row) + 1]
    assert "orch/baseline@abcdef1" in below and "ep 3/10" in below and "120/400" in below
    assert "ETA 1m40s" in below  # 140 s reported at t=960, now 1000
    spark = sparkline(progress["baseline-s0"].losses)
    assert spark in below and spark[0] == "█" and spark[-1] == "▁"  # a falling loss
    assert "orch/joint-i3d@1234567 dirty" in text
    failure = next(x for x in lines if x.startswith("✗"))
    assert "joint-i3d-s0 failed: out of memory on cuda:0 (exit 1)" in failure
    assert lines.index(failure) < next(i for i, x in enumerate(lines) if "│ epoch 3" in x)
    assert "RuntimeError: CUDA out of memory" in text  # the failed job's log tail
    assert "gate 1/1 passed" in text and "cancelled: stopped by the user" in text


def test_error_event_shows_before_the_launcher_reaps_the_job() -> None:
    jobs, progress, logs = fixed_jobs()
    progress["baseline-s0"].apply(ErrorEvent(time=1001.0, message="loss became nan at step 121"))
    console = capture()
    console.print(render_jobs(jobs[:1], progress, logs, now=1002.0))
    text = console.export_text()
    assert "✗ baseline-s0 error (exception): loss became nan at step 121" in text


def test_failure_reason_is_red() -> None:
    jobs, progress, logs = fixed_jobs()
    console = Console(width=120, force_terminal=True, color_system="standard",
                      file=io.StringIO())
    console.print(render_jobs(jobs[1:2], progress, {}, now=1000.0))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[1;31m✗ joint-i3d-s0 failed" in out


def test_render_run_header_counts_stages() -> None:
    jobs, progress, logs = fixed_jobs()
    run = st.RunState(run_id="r7", preset="tiny", started=880.0, jobs=jobs)
    console = capture()
    console.print(render_run(run, progress, logs, now=1000.0))
    first = console.export_text().splitlines()[0]
    assert first.startswith("run r7  preset tiny  running  2m00s")
    assert "1 training" in first and "1 failed" in first and "1 queued" in first


def test_render_run_names_the_shared_jobs_the_variants_wait_for() -> None:
    jobs, progress, logs = fixed_jobs()
    run = st.RunState(run_id="r8", preset="tiny", started=880.0, jobs=jobs,
                      shared_running=["tokenizer", "i3d"])
    console = capture()
    console.print(render_run(run, progress, logs, now=1000.0))
    second = console.export_text().splitlines()[1]
    assert "shared jobs running" in second and "tokenizer, i3d" in second
    reread = parse_run(dump_run(run), Path("state.json"))
    assert reread.shared_running == ["tokenizer", "i3d"]


# ---------------------------------------------------------------------------- plain lines


def make_run(tmp_path: Path, stage: st.Stage, *, status: str = "running") -> st.RunState:
    out = tmp_path / "job"
    out.mkdir(exist_ok=True)
    job = st.JobState(variant="baseline", name="baseline", stage=stage, device="cpu",
                      output_dir=str(out), log_path=str(out / "train.log"))
    return st.RunState(run_id="r1", preset="micro", started=0.0, status=status, jobs=[job],
                       orchestrator_pid=os.getpid())


def test_plain_lines_one_per_stage_or_epoch_change(tmp_path: Path) -> None:
    console = capture()
    view = LiveView(console, live=False, plain_interval=10.0)
    events = tmp_path / "job" / "events.jsonl"
    with view:
        view.update(make_run(tmp_path, st.Stage.queued), now=0.0)
        view.update(make_run(tmp_path, st.Stage.queued), now=1.0)  # no change: no line
        events.write_text(progress_line(1, loss=2.0))
        view.update(make_run(tmp_path, st.Stage.training), now=2.0)
        with open(events, "a") as f:
            f.write(progress_line(6, loss=1.5, epoch=2))
        view.update(make_run(tmp_path, st.Stage.training), now=3.0)  # epoch 2, throttled
        view.update(make_run(tmp_path, st.Stage.training), now=12.5)  # now it is due
        view.update(make_run(tmp_path, st.Stage.training), now=13.0)
        failed = make_run(tmp_path, st.Stage.failed)
        failed.jobs[0].reason = "exit code 1"
        view.update(failed, now=14.0)
    lines = console.export_text().splitlines()
    assert len(lines) == 4, lines
    assert "baseline queued" in lines[0]
    assert "training epoch 1/?" in lines[1] and "loss 2.0000" in lines[1]
    assert "epoch 2/?" in lines[2] and "step 6/10" in lines[2] and "50.0 samples/s" in lines[2]
    assert "baseline failed: exit code 1" in lines[3]
    assert "\x1b" not in console.file.getvalue()  # type: ignore[attr-defined]


def test_watch_follows_until_the_run_ends(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = make_run(tmp_path, st.Stage.done, status="done")
    (tmp_path / "job" / "events.jsonl").write_text(progress_line(10, loss=0.5, epoch=2))
    st.save_run(home, run)
    console = capture()
    result = watch(st.run_dir(home, "r1"), console=console, interval=0.01, live=False)
    assert not result.detached and result.run is not None and result.run.status == "done"
    assert "baseline done epoch 2/? step 10/10 loss 0.5000" in console.export_text()


def test_watch_live_once_renders_a_frame(tmp_path: Path) -> None:
    home = tmp_path / "home"
    st.save_run(home, make_run(tmp_path, st.Stage.training))
    (tmp_path / "job" / "train.log").write_text("hello from the job\n")
    console = Console(width=120, force_terminal=True, no_color=True, record=True,
                      file=io.StringIO())
    result = watch(st.state_path(home, "r1"), console=console, once=True, interval=0.01)
    assert result.run is not None and result.run.jobs[0].stage == st.Stage.training
    text = console.export_text()
    assert "run r1" in text and "hello from the job" in text


def test_monitor_command_once_without_a_terminal(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from orchestrator.cli.monitor import monitor
    from orchestrator.errors import UsageError

    app = typer.Typer()
    app.command("monitor")(monitor)
    app.command("noop")(lambda: None)
    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    missing = CliRunner().invoke(app, ["monitor"])
    assert isinstance(missing.exception, UsageError) and "no run found" in str(missing.exception)

    st.save_run(home, make_run(tmp_path, st.Stage.training))
    (tmp_path / "job" / "events.jsonl").write_text(progress_line(4, loss=0.75))
    result = CliRunner().invoke(app, ["monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert "baseline training epoch 1/? step 4/10 loss 0.7500" in result.stdout
