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

ROW = {"mse": 1.0, "mae": 2.0, "psnr": 20.0, "ssim": 0.5, "mse_per_pixel": 0.1,
       "per_frame": {"psnr": [21.0, 19.0]}}


def _results() -> dict:
    return {
        "schema": RESULTS_SCHEMA, "variant": "wide", "preset": "micro", "seed": 0,
        "status": "success", "config": {"width": 64},
        "environment": {"python": "3", "torch": "none", "device": "cpu", "cuda": None,
                        "platform": "linux", "threads": 1},
        "parameters": {"trainable": 10, "frozen": 0},
        "history": [{"epoch": 1, "train_loss": 0.5, "eval": {"psnr": 20.0}, "seconds": 1.0}],
        "final": {"model": ROW, "black": ROW, "copy_last": ROW, "oracle": ROW},
        "timings": {"wall_s": 1.0, "train_s": 1.0, "samples_per_s": 8.0,
                    "peak_memory_mb": None},
        "artifacts": {"checkpoint": None},
    }


def test_a_run_written_with_the_client_reads_back_with_orchs_readers(tmp_path: Path) -> None:
    with Run.open(tmp_path / "out") as run:
        run.start(variant="wide", preset="micro", seed=0, epochs=1, steps_per_epoch=2,
                  total_steps=2)
        run.progress(epoch=1, step=1, loss=0.7, total_steps=2)
        run.progress(epoch=1, step=2, loss=float("nan"))  # not JSON: written as null
        run.eval(epoch=1, metrics={"psnr": 20.0})
        run.checkpoint(epoch=1, path="checkpoints/last.pt")
        run.write_results(_results())
        run.end()
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert [e.event for e in events] == ["start", "progress", "progress", "eval", "checkpoint",
                                         "end"]
    assert events[0].pid == os.getpid() and events[1].loss == 0.7
    assert events[-1].results == "results.json" and events[-1].wall_s is not None
    assert load_results(tmp_path / "out" / "results.json").final["model"].psnr == 20.0


def test_a_record_the_format_refuses_is_not_written(tmp_path: Path) -> None:
    run = Run(tmp_path)
    broken = _results()
    del broken["final"]["oracle"]
    with pytest.raises(ValueError, match="final.oracle"):
        run.write_results(broken)
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
