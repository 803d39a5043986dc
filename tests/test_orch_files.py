"""A torn or corrupt state.json, events.jsonl or results.json: every command that reads it
says so in the same one warning line, shows what it still can, and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.formats import (
    EventTail,
    JobState,
    ProgressEvent,
    RunState,
    Stage,
    dump_run,
    parse_event,
    write_text_atomic,
)
from orchestrator.state import read_state_file, save_run
from tests.orch_fixtures import *  # noqa: F403

runner = CliRunner()
READERS = {  # the commands that read each file, with the exit codes they may end with
    "state.json": [["status"], ["status", "--json"], ["monitor", "--once"], ["compare"],
                   ["compare", "--json"]],
    "events.jsonl": [["monitor", "--once"], ["compare"], ["compare", "--json"]],
    "results.json": [["compare"], ["compare", "--json"]],
}


@pytest.fixture
def finished_run(spawned: Path, orch_env: Path) -> Path:
    result = runner.invoke(app, ["train", "--plain"])
    assert result.exit_code == 0, result.output
    return orch_env / "runs" / (orch_env / "latest").read_text().strip()


def damage(run_dir: Path, which: str) -> Path:
    if which == "state.json":
        path = run_dir / "state.json"
        path.write_bytes(path.read_bytes()[:200])  # torn mid-object
    elif which == "events.jsonl":
        path = run_dir / "alpha" / "events.jsonl"
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], '{"event": "progress", "ti', *lines[1:]]) + "\n")
    else:
        path = run_dir / "alpha" / "results.json"
        path.write_text(path.read_text()[:100])
    return path


@pytest.mark.parametrize("which", sorted(READERS))
def test_every_reader_warns_once_in_the_same_words(finished_run: Path, which: str) -> None:
    path = damage(finished_run, which)
    lines = set()
    for command in READERS[which]:
        result = runner.invoke(app, command)
        assert result.exception is None or isinstance(result.exception, SystemExit), command
        assert "Traceback" not in result.output, command
        assert result.exit_code == 0, (command, result.output)
        warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
        mine = [ln for ln in warnings if str(path) in ln]
        assert len(mine) == 1, (command, result.stderr)
        lines.add(mine[0])
        if command[-1] == "--json":
            json.loads(result.stdout)  # stdout stays clean JSON
    assert len(lines) == 1, lines  # the same line from every command
    (line,) = lines
    expected = {"state.json": "showing its last good state",
                "events.jsonl": "1 unreadable line(s); using the other lines",
                "results.json": "the job is shown without results"}[which]
    assert expected in line


def test_a_torn_state_shows_the_last_good_state(finished_run: Path) -> None:
    damage(finished_run, "state.json")
    status = runner.invoke(app, ["status", "--json"])
    run = json.loads(status.stdout)
    assert run["run_id"] == finished_run.name and len(run["jobs"]) == 2


def test_state_without_a_good_copy_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert read_state_file(path, warn=False) is None


def test_save_keeps_the_previous_state_as_backup(tmp_path: Path) -> None:
    run = RunState("r1", "tiny", 1.0, jobs=[JobState("a")])
    save_run(tmp_path, run, latest=True)
    run.jobs[0].stage = Stage.done
    save_run(tmp_path, run)
    folder = tmp_path / "runs" / "r1"
    assert json.loads((folder / "state.json.bak").read_text())["jobs"][0]["stage"] == "pending"
    assert read_state_file(folder / "state.json") == run
    assert (tmp_path / "latest").read_text() == "r1\n"


def test_event_lines_are_typed_and_strict(tmp_path: Path) -> None:
    event = parse_event('{"event": "progress", "time": 1, "epoch": 1, "step": 2, "loss": null}')
    assert isinstance(event, ProgressEvent) and event.loss != event.loss  # null reads as NaN
    assert parse_event('{"event": "cache", "time": 1}') is None  # a kind orch does not read
    for bad in ('{"event": "progress", "time": 1, "epoch": "1", "step": 2, "loss": 0.5}',
                '{"event": "eval", "time": 1}', "[1, 2]", "not json"):
        with pytest.raises(ValueError):
            parse_event(bad)
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "eval", "time": 1, "epoch": 1, "metrics": {"psnr": 20}}\n'
                    "garbage\n")
    tail = EventTail(path)
    assert len(tail.read(final=True)) == 1 and tail.bad_lines == 1


def test_the_atomic_writer_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "state.json"
    write_text_atomic(target, dump_run(RunState("r", "tiny", 0.0)))
    write_text_atomic(target, "second\n")
    assert target.read_text() == "second\n"
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]
