"""The client a train script writes orch's files with (``orchestrator.client``): what it
writes is what orch's readers read, a refused record writes nothing, an exception ends the
events with an error, and a thread grant is seen once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.client import THREADS_FILE_ENV, Run, ThreadGrant
from orchestrator.formats import load_results, read_events
from orchestrator.formats.results import RESULTS_SCHEMA


def _results() -> dict:
    """A schema-2 record of a study that is not the video one: its own metrics and rows."""
    return {
        "schema": RESULTS_SCHEMA, "variant": "wide", "preset": "micro", "seed": 0,
        "status": "success", "config": {"width": 64},
        "environment": {"python": "3.11", "device": "cpu"},
        "history": [{"epoch": 1, "train_loss": 0.5, "eval": {"accuracy": 0.8}}],
        "metrics": {"model": {"accuracy": 0.8, "loss": 0.4},
                    "majority_class": {"accuracy": 0.5, "loss": 0.7}},
        "series": {"accuracy_per_length": {"index": "sequence length", "metric": "accuracy",
                                           "rows": {"model": [0.9, 0.7]}}},
    }


def test_a_run_written_with_the_client_reads_back_with_orchs_readers(tmp_path: Path) -> None:
    with Run.open(tmp_path / "out") as run:
        run.start(variant="wide", preset="micro", seed=0, epochs=1, steps_per_epoch=2,
                  total_steps=2)
        run.progress(epoch=1, step=1, loss=0.7, total_steps=2)
        run.progress(epoch=1, step=2, loss=float("nan"))  # not JSON: written as null
        run.eval(epoch=1, metrics={"accuracy": 0.8})
        run.checkpoint(epoch=1, path="checkpoints/last.pt")
        run.write_results(_results())
        run.end()
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert [e.event for e in events] == ["start", "progress", "progress", "eval", "checkpoint",
                                         "end"]
    assert events[0].pid == os.getpid() and events[1].loss == 0.7
    assert events[-1].results == "results.json" and events[-1].wall_s is not None
    read = load_results(tmp_path / "out" / "results.json")
    assert read.metrics["model"]["accuracy"] == 0.8
    assert read.series["accuracy_per_length"].rows["model"] == (0.9, 0.7)


def test_a_record_the_format_refuses_is_not_written(tmp_path: Path) -> None:
    run = Run(tmp_path)
    broken = _results()
    del broken["metrics"]["model"]
    with pytest.raises(ValueError, match="metrics.model"):
        run.write_results(broken)
    with pytest.raises(ValueError, match="metrics.model.accuracy"):
        run.write_results(_results() | {"metrics": {"model": {"accuracy": "high"}}})
    with pytest.raises(ValueError, match="schema"):
        run.write_results(_results() | {"schema": 99})
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize(("error", "kind"), [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (KeyboardInterrupt(), "interrupted"),
    (ValueError("bad batch\nsecond line"), "exception"),
])
def test_an_exception_leaving_the_run_ends_it_with_an_error(tmp_path: Path, error, kind) -> None:
    with pytest.raises(type(error)), Run(tmp_path) as run:
        run.start()
        raise error
    last = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert (last["event"], last["kind"]) == ("error", kind)
    assert "\n" not in last["message"]
    assert (last["traceback"] != "") == (kind != "interrupted")


def test_an_error_already_reported_is_not_reported_twice(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Run(tmp_path) as run:
        run.error("data file unreadable", kind="data")
        raise RuntimeError("data file unreadable")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["data"]


def test_a_thread_grant_is_seen_once_and_only_when_orch_names_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_FILE_ENV, raising=False)
    assert ThreadGrant(check_every_s=0.0).poll() is None
    grant = tmp_path / "threads"
    monkeypatch.setenv(THREADS_FILE_ENV, str(grant))
    follow = ThreadGrant(check_every_s=0.0)
    assert follow.poll() is None  # not written yet
    grant.write_text("3")
    assert follow.poll() == 3 and follow.poll() is None
    replaced = tmp_path / "threads.new"
    replaced.write_text("6")
    replaced.replace(grant)  # orch replaces the file
    assert follow.poll() == 6
