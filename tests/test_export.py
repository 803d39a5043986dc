"""orch export: a finished run into TensorBoard event files and an MLflow store, read back
with each library's own reader."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from orchestrator import state as st
from orchestrator.cli.main import app
from orchestrator.client import Run

RUN_ID = "20260101-120000-1"
LONG_NOTE = "x" * 7000  # longer than an MLflow param value may be


def train_job(out: Path, variant: str, seed: int, *, finish: bool = True) -> list[dict[str, Any]]:
    """What a train script writes through the client: events, then (when it finishes) the
    results with a curve and a picture. Returns the progress and eval events written."""
    written = []
    with Run(out) as run:
        run.start(variant=variant, preset="micro", seed=seed, epochs=2, steps_per_epoch=2,
                  total_steps=4)
        for epoch in (1, 2):
            for step in (2 * epoch - 1, 2 * epoch):
                written.append(run.progress(epoch=epoch, step=step, loss=1.0 / (step + seed),
                                            total_steps=4, samples_per_s=100.0 + step,
                                            lr=1e-3 * (5 - step), memory_mb=300.0 + step))
            written.append(run.eval(epoch=epoch, metrics={"psnr": 20.0 + epoch + seed,
                                                          "ssim": 0.5 + 0.1 * epoch}))
        if not finish:
            run.error("loss is nan")
            return written
        Image.new("RGB", (24, 8), (seed * 90, 40, 200)).save(out / "frames.png")
        run.write_results({
            "schema": 2, "variant": variant, "preset": "micro", "seed": seed,
            "status": "success",
            "metrics": {"model": {"psnr": 23.5 + seed, "ssim": 0.71},
                        "copy_last": {"psnr": 21.0, "ssim": 0.7}},
            "series": {"psnr_per_frame": {"index": "future frame", "metric": "psnr",
                                          "rows": {"model": [25.0, 23.0, 22.5]}}},
            "images": {"frames": {"path": "frames.png", "caption": "a strip"}},
            "config": {"train": {"lr": 3e-4, "batch_size": 8, "betas": [0.9, 0.99]},
                       "variant": variant, "note": LONG_NOTE, "tokenizer": None},
            "environment": {"python": "3.11.7", "device": "cpu"},
            "parameters": {"trainable": 1234, "frozen": 56},
            "timings": {"wall_s": 12.5, "train_s": 10.0, "samples_per_s": 101.0,
                        "peak_memory_mb": 304.0},
            "artifacts": {"checkpoint": "checkpoints/last.pt"},
            "provenance": {"code": {"commit": "abc1234", "dirty": False}},
        })
        run.end()
    return written


@pytest.fixture
def finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A run whose orchestrator still drives it: two jobs done, one failed after a few
    steps, one still training, one whose gate failed; the run's report beside them."""
    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    monkeypatch.chdir(tmp_path)  # no config here: export needs none
    base = st.run_dir(home, RUN_ID)
    run = st.RunState(run_id=RUN_ID, preset="micro", started=time.time() - 60,
                      orchestrator_pid=os.getpid(), orchestrator_started=time.time())
    written = {}
    for name, variant, seed, stage in (("baseline-s0", "baseline", 0, st.Stage.done),
                                       ("baseline-s1", "baseline", 1, st.Stage.done),
                                       ("joint-s0", "joint", 0, st.Stage.failed)):
        out = base / name
        written[name] = train_job(out, variant, seed, finish=stage == st.Stage.done)
        diff = out / "diff.patch"
        diff.write_text("+print('uncommitted')\n")
        run.jobs.append(st.JobState(variant=variant, seed=seed, name=name, preset="micro",
                                    branch=f"orch/{variant}", commit="abc1234def",
                                    dirty=True, diff_path=str(diff), stage=stage,
                                    output_dir=str(out), started=time.time() - 30,
                                    finished=time.time()))
    run.jobs.append(st.JobState(variant="slow", name="slow-s0", stage=st.Stage.training,
                                output_dir=str(base / "slow-s0")))
    run.jobs.append(st.JobState(variant="broken", name="broken-s0",
                                stage=st.Stage.gate_failed))
    st.save_run(home, run, latest=True)
    (base / "report.md").write_text("# report\n")
    return {"home": home, "base": base, "events": written}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args])


def progress_of(events: list[dict[str, Any]], field: str) -> list[tuple[int, float]]:
    return [(e["step"], e[field]) for e in events if e["event"] == "progress"]


# ---------------------------------------------------------------------------- TensorBoard


def accumulator(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # size_guidance 0 keeps every point (the default samples some tags down).
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0,
                                                       "tensors": 0})
    acc.Reload()
    return acc


def same_points(acc: Any, tag: str, expected: list[tuple[int, float]]) -> bool:
    """The tag's steps are exactly these, its values these to float32 (TensorBoard's)."""
    got = acc.Scalars(tag)
    return ([s.step for s in got] == [step for step, _ in expected]
            and [s.value for s in got] == pytest.approx([v for _, v in expected], rel=1e-6))


def test_tensorboard_round_trip(finished_run: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="pip install -e '.[export]'")
    from tensorboard.plugins.hparams import plugin_data_pb2

    logdir = tmp_path / "tb"
    result = invoke("--to", "tensorboard", str(logdir), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_id"] == RUN_ID
    assert [(j["job"], j["action"]) for j in summary["jobs"]] == [
        ("baseline-s0", "written"), ("baseline-s1", "written"), ("joint-s0", "written")]
    assert "still training" in summary["not_exported"]["slow-s0"]
    assert "gate_failed" in summary["not_exported"]["broken-s0"]

    events = finished_run["events"]["baseline-s1"]
    acc = accumulator(logdir / RUN_ID / "baseline-s1")
    for field in ("loss", "lr", "samples_per_s", "memory_mb"):
        assert same_points(acc, f"train/{field}", progress_of(events, field))
    # Each evaluation sits at the last step before it; psnr 20 + epoch + seed.
    assert same_points(acc, "eval/psnr", [(2, 22.0), (4, 23.0)])
    results = json.loads((finished_run["base"] / "baseline-s1" / "results.json").read_text())
    assert same_points(acc, "final/model/psnr", [(4, results["metrics"]["model"]["psnr"])])
    assert same_points(acc, "final/copy_last/ssim", [(4, 0.7)])
    assert same_points(acc, "timings/peak_memory_mb", [(4, 304.0)])
    assert same_points(acc, "series/psnr_per_frame/model", [(0, 25.0), (1, 23.0), (2, 22.5)])
    image = acc.Images("images/frames")[0]
    assert (image.width, image.height) == (24, 8)
    assert image.encoded_image_string == (finished_run["base"] / "baseline-s1" /
                                          "frames.png").read_bytes()
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(3e-4)
    assert hparams["train.betas"].string_value == "[0.9, 0.99]"
    assert hparams["orch.variant"].string_value == "baseline"
    assert hparams["orch.seed"].string_value == "1"

    # The failed job's steps are there; it has no final numbers.
    failed = accumulator(logdir / RUN_ID / "joint-s0")
    assert same_points(failed, "train/loss",
                       progress_of(finished_run["events"]["joint-s0"], "loss"))
    assert not any(tag.startswith("final/") for tag in failed.Tags()["scalars"])


def test_tensorboard_twice_skips_then_replaces(finished_run: dict[str, Any],
                                               tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="pip install -e '.[export]'")
    logdir = tmp_path / "tb"
    assert invoke("--to", "tensorboard", str(logdir)).exit_code == 0
    again = invoke("--to", "tensorboard", str(logdir), "--run", RUN_ID)
    assert again.exit_code == 0, again.output
    assert "skipped" in again.stdout and "written" not in again.stdout
    assert "view: tensorboard --logdir" in again.stderr
    replaced = invoke("--to", "tensorboard", str(logdir), "--replace", "--json")
    assert {j["action"] for j in json.loads(replaced.stdout)["jobs"]} == {"replaced"}
    folder = logdir / RUN_ID / "baseline-s0"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert len(accumulator(folder).Scalars("train/loss")) == 4  # not doubled


# ---------------------------------------------------------------------------- MLflow


def mlflow_runs(uri: str) -> dict[str, Any]:
    """Every active MLflow run of experiment "orch", by the orch job it holds."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("orch")
    found = client.search_runs([experiment.experiment_id],
                               filter_string=f"tags.`orch.run_id` = '{RUN_ID}'")
    return {run.data.tags["orch.job"]: run for run in found}


def test_mlflow_round_trip(finished_run: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="pip install -e '.[export]'")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = invoke("--to", "mlflow", uri, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    jobs = {j["job"]: j for j in summary["jobs"]}
    assert {j["action"] for j in jobs.values()} == {"written"}
    assert any("cut to MLflow's 6000" in note for note in jobs["baseline-s0"]["notes"])

    runs = mlflow_runs(uri)
    assert sorted(runs) == ["baseline-s0", "baseline-s1", "joint-s0"]
    run = runs["baseline-s1"]
    assert run.info.run_id == jobs["baseline-s1"]["where"]
    assert run.info.run_name == f"{RUN_ID}/baseline-s1"
    assert (run.info.status, runs["joint-s0"].info.status) == ("FINISHED", "FAILED")
    tags = run.data.tags
    assert (tags["orch.variant"], tags["orch.seed"], tags["orch.preset"]) == (
        "baseline", "1", "micro")
    assert tags["mlflow.source.git.commit"] == "abc1234def"
    assert tags["environment.device"] == "cpu"
    assert tags["artifacts.checkpoint"] == "checkpoints/last.pt"
    params = run.data.params
    assert params["train.lr"] == "0.0003" and params["train.batch_size"] == "8"
    assert params["parameters.trainable"] == "1234" and params["tokenizer"] == "null"
    assert params["note"] == LONG_NOTE[:6000]

    client = MlflowClient(tracking_uri=uri)
    events = finished_run["events"]["baseline-s1"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == progress_of(events, "loss")
    results = json.loads((finished_run["base"] / "baseline-s1" / "results.json").read_text())
    assert run.data.metrics["final/model/psnr"] == results["metrics"]["model"]["psnr"]
    assert run.data.metrics["timings/wall_s"] == 12.5
    evals = client.get_metric_history(run.info.run_id, "eval/psnr")
    assert sorted((m.step, m.value) for m in evals) == [(2, 22.0), (4, 23.0)]

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "diff.patch", "images", "report"} <= top
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images")] == [
        "images/frames.png"]
    # The artifacts live beside the database, not under the folder the export ran in.
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()


def test_mlflow_twice_skips_then_replaces(finished_run: dict[str, Any],
                                          tmp_path: Path) -> None:
    pytest.importorskip("mlflow", reason="pip install -e '.[export]'")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert invoke("--to", "mlflow", uri).exit_code == 0
    first = {job: run.info.run_id for job, run in mlflow_runs(uri).items()}
    again = json.loads(invoke("--to", "mlflow", uri, "--json").stdout)
    assert {(j["job"], j["action"], j["where"]) for j in again["jobs"]} == {
        (job, "skipped", run_id) for job, run_id in first.items()}
    assert {job: run.info.run_id for job, run in mlflow_runs(uri).items()} == first
    replaced = json.loads(invoke("--to", "mlflow", uri, "--replace", "--json").stdout)
    assert {j["action"] for j in replaced["jobs"]} == {"replaced"}
    now = {job: run.info.run_id for job, run in mlflow_runs(uri).items()}
    assert sorted(now) == sorted(first) and not set(now.values()) & set(first.values())


# ---------------------------------------------------------------------------- errors


def error_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(("target", "module"), [
    ("tensorboard", "tensorboard.summary.writer.event_file_writer"), ("mlflow", "mlflow"),
    ("mlflow", "sqlalchemy")])  # mlflow-skinny alone has no SQLite store
def test_missing_library_says_what_to_install(finished_run: dict[str, Any], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, target: str,
                                              module: str) -> None:
    from orchestrator.export import MissingExtra, export_run

    monkeypatch.setitem(sys.modules, module, None)  # its import now fails, as if not there
    destination = f"sqlite:///{tmp_path / 'm.db'}" if target == "mlflow" else str(tmp_path)
    result = invoke("--to", target, destination)
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and f"--to {target} needs" in result.stderr
    assert "pip install 'orch[export]'" in result.stderr  # brackets kept, not read as markup
    with pytest.raises(MissingExtra, match=r"pip install 'orch\[export\]'$"):
        export_run(finished_run["base"], to=target, destination=destination)


def test_bad_target_is_one_usage_line(finished_run: dict[str, Any], tmp_path: Path) -> None:
    result = invoke("--to", "wandb", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert error_lines(result) == ["error: --to 'wandb': export to one of tensorboard, mlflow"]


def test_run_without_finished_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv(st.HOME_ENV, str(home))
    monkeypatch.chdir(tmp_path)
    st.save_run(home, st.RunState(run_id="r1", preset="micro", started=1.0, status="failed",
                                  jobs=[st.JobState(variant="a", stage=st.Stage.gate_failed)]))
    result = invoke("--to", "tensorboard", str(tmp_path / "tb"))
    assert result.exit_code == 5
    assert error_lines(result) == [
        "error: no finished job in run r1: see `orch status` for where its jobs stand"]
    missing = invoke("--to", "tensorboard", str(tmp_path / "tb"), "--run", "nope")
    assert missing.exit_code == 2 and "no run 'nope'" in missing.stderr
