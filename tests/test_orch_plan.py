"""The rehearsal, its plan, per-preset inputs and resources, the device flag and the
out-of-memory retry: the planner on its own, then orch end to end on the fake study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.config import parse_config
from orchestrator.devices import Gpu, Request
from orchestrator.errors import ConfigError
from orchestrator.formats import JobState, RunState, Stage, collect_warnings
from orchestrator.plan import (
    CUDA_CONTEXT_MB,
    REHEARSAL_FILE,
    SUSTAINED_TFLOPS,
    EvaluationCost,
    EvaluationPass,
    Measurement,
    MemoryModel,
    PhasePeak,
    Plan,
    Point,
    RunShape,
    build_plan,
    choose_micro_batch,
    fold_run_peaks,
    latest_plan_path,
    load_plan,
    write_plan,
)
from orchestrator.rehearsal import measurements
from orchestrator.scheduler import Scheduler
from orchestrator.ui import plan_table
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import CONFIG, commit_all

runner = CliRunner()


def rehearsed(*peaks: tuple[int, float], setup: float = 0.0, evaluation: float = 0.0,
              batch: int = 16, device: str = "cpu", precision: str = "bf16") -> Measurement:
    """A rehearsal.json: (micro-batch, peak) per measured step, and the other phases."""
    return Measurement(
        batch_size=batch, device=device, precision=precision,
        memory_source="cuda_max_memory_reserved" if device.startswith("cuda")
        else "process_peak_rss",
        points=tuple(Point(micro_batch=m, peak_memory_mb=peak, flops=2e12 * m, step_seconds=1.0)
                     for m, peak in peaks),
        phases={"setup": PhasePeak(peak_memory_mb=setup),
                "evaluation": PhasePeak(peak_memory_mb=evaluation)})


# ---------------------------------------------------------------------------- the planner


def test_two_points_give_the_fixed_part_and_the_part_per_clip() -> None:
    model = MemoryModel.fit(rehearsed((1, 5000.0), (2, 9000.0), setup=3000.0))
    assert (model.fixed_mb, model.per_clip_mb, model.floor_mb) == (1000.0, 4000.0, 3000.0)
    assert model.at(1) == (5000.0, "measured")
    assert model.at(16) == (65000.0, "extrapolated")


def test_the_other_phases_are_a_floor_under_every_micro_batch() -> None:
    model = MemoryModel.fit(rehearsed((1, 5000.0), (2, 9000.0), setup=2000.0,
                                      evaluation=8000.0))
    assert model.floor_mb == 8000.0
    assert model.at(1) == (8000.0, "measured")  # evaluation peaks above the 1-clip step
    assert model.at(2) == (9000.0, "measured")
    assert model.at(4) == (17000.0, "extrapolated")
    one = MemoryModel.fit(rehearsed((1, 3000.0), batch=1, evaluation=500.0))
    assert (one.fixed_mb, one.per_clip_mb) == (0.0, 3000.0)  # one point: all of it per clip


def test_the_largest_dividing_micro_batch_that_fits_is_chosen() -> None:
    model = MemoryModel.fit(rehearsed((1, 6000.0), (2, 11000.0)))
    # 80 GB: 16 clips need 81 GB + context and slack: too much; 8 clips (41 GB) fit.
    assert choose_micro_batch(model, 16, 81920.0) == (8, True)
    assert choose_micro_batch(model, 16, 7500.0) == (1, True)
    assert choose_micro_batch(model, 16, 5000.0) == (1, False)  # not even one clip
    assert choose_micro_batch(model, 16, None) == (16, True)  # no GPU: the whole batch
    floored = MemoryModel.fit(rehearsed((1, 6000.0), (2, 11000.0), evaluation=7000.0))
    assert choose_micro_batch(floored, 16, 7500.0) == (1, False)  # evaluation needs more


def test_plan_places_jobs_and_names_the_one_that_fits_nowhere() -> None:
    plan = build_plan("full", {
        "big": rehearsed((1, 30000.0), (2, 50000.0)),
        "small": rehearsed((1, 3000.0), (2, 4000.0), evaluation=6000.0, precision="fp32"),
        "huge": rehearsed((1, 90000.0), (2, 170000.0)),
    }, [Gpu(0, 81920, 81920), Gpu(1, 24576, 24576)])
    big, small, huge = (plan.job(n) for n in ("big", "small", "huge"))
    assert big is not None and small is not None and huge is not None
    assert (big.micro_batch, big.accumulation, big.memory_basis) == (2, 8, "measured")
    assert big.gpus == [0] and small.gpus == [1]  # each on an idle GPU of its own
    assert small.micro_batch == 16 and small.memory_basis == "extrapolated"
    assert small.planned_mb == pytest.approx(small.memory_mb + CUDA_CONTEXT_MB
                                             + 0.05 * small.memory_mb)
    assert not huge.fits and huge.gpus == [] and "at one clip" in huge.note
    assert big.flops_per_step == pytest.approx(2e12 * 16)
    assert (big.precision, small.precision, plan.precision) == ("bf16", "fp32", "bf16/fp32")
    assert (small.other_phases_mb, small.floor_dominates) == (6000.0, False)  # 18 GB > 6 GB
    assert not big.floor_dominates


def test_the_plan_estimates_an_epoch_from_the_flops_and_the_real_runs_steps() -> None:
    """2e12 FLOPs per clip-step, batch 16, 625 steps an epoch: 2e16 FLOPs, 200 s at 100
    TFLOP/s sustained; a rehearsal.json without its run's shape gives no estimate."""
    shaped = rehearsed((1, 3000.0), (2, 4000.0)).model_copy(
        update={"run": RunShape(epochs=50, steps_per_epoch=625)})
    plan = build_plan("full", {"a": shaped, "b": rehearsed((1, 3000.0), (2, 4000.0))},
                      [Gpu(0, 81920, 81920)])
    a, b = plan.job("a"), plan.job("b")
    assert a is not None and b is not None
    assert (a.steps_per_epoch, a.epochs) == (625, 50)
    assert a.epoch_hours(SUSTAINED_TFLOPS) == pytest.approx(2e12 * 16 * 625 / 100e12 / 3600)
    assert a.epoch_hours(50.0) == pytest.approx(2 * a.epoch_hours())
    assert b.epoch_hours() is None
    console = Console(width=250, record=True)
    console.print(plan_table(plan))
    text = console.export_text()
    assert "3 min" in text and "100 TFLOP/s" in text
    # plan.json keeps it.
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.job("a") == a


def test_the_plan_estimates_the_runs_evaluations_from_their_flops_per_held_out_clip() -> None:
    """The rehearsal scored 1 clip: 3e12 FLOPs an evaluated epoch, 5e12 more for the final
    rows. The run evaluates 10 times on 512 clips, and the model once more at the end:
    (11 x 3e12 + 5e12) x 512 = 1.9456e16."""
    shaped = rehearsed((1, 3000.0), (2, 4000.0)).model_copy(update={
        "run": RunShape(epochs=50, steps_per_epoch=625, eval_clips=512, evaluations=10),
        "evaluation": EvaluationCost(precision="bf16", every_epochs=5, clips=1,
                                     epoch=EvaluationPass(seconds=40.0, flops=3e12),
                                     final=EvaluationPass(seconds=70.0, flops=5e12))})
    assert shaped.evaluation_flops == pytest.approx(1.9456e16)
    plan = build_plan("full", {"a": shaped, "old": rehearsed((1, 3000.0), (2, 4000.0))},
                      [Gpu(0, 81920, 81920)])
    a, old = plan.job("a"), plan.job("old")
    assert a is not None and old is not None
    assert a.evaluation_hours() == pytest.approx(1.9456e16 / 100e12 / 3600)
    assert a.run_hours() == pytest.approx(50 * a.epoch_hours() + a.evaluation_hours())
    assert old.evaluation_hours() is None  # a rehearsal.json from before evaluations were measured
    console = Console(width=250, record=True)
    console.print(plan_table(plan))
    assert "3 min (bf16)" in console.export_text()
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).job("a") == a


def test_the_plan_table_says_how_each_memory_is_known() -> None:
    plan = build_plan("full", {
        "evaluates-big": rehearsed((1, 2000.0), (2, 2500.0), evaluation=20000.0),
        "steps-big": rehearsed((1, 30000.0), (2, 50000.0)),
    }, [Gpu(0, 61440, 61440)])
    evaluates_big = plan.job("evaluates-big")
    assert evaluates_big is not None and evaluates_big.floor_dominates
    console = Console(width=250, record=True)
    console.print(plan_table(plan))
    text = console.export_text()
    assert "measured on cpu in bf16" in text
    assert "19.5 GB (sets the peak)" in text  # evaluation, not the step, sets its peak
    assert "48.8 GB (measured)" in text and "2 x 8" in text  # steps-big at its 2-clip point
    assert "waits for a GPU the others free" in text


def test_plan_json_keeps_what_a_replan_needs(tmp_path: Path) -> None:
    plan = build_plan("full", {"a": rehearsed((1, 3000.0), (2, 4000.0), evaluation=3500.0)},
                      [Gpu(0, 24576, 24576)])
    write_plan(plan, tmp_path / "run", tmp_path)
    raw = json.loads(latest_plan_path(tmp_path, "full", "cpu").read_text())
    (job,) = raw["jobs"]
    assert (job["precision"], job["other_phases_mb"]) == ("bf16", 3500.0)
    assert job["measured"] == [{"micro_batch": 1, "peak_memory_mb": 3000.0,
                                "source": "rehearsal"},
                               {"micro_batch": 2, "peak_memory_mb": 4000.0,
                                "source": "rehearsal"}]
    assert load_plan(tmp_path, "full", "cpu") == plan


# ---------------------------------------------------------------------------- rehearsal.json


def done_job(tmp_path: Path, variant: str, preset: str = "full") -> JobState:
    out = tmp_path / "run" / variant
    out.mkdir(parents=True)
    return JobState(variant=variant, preset=preset, stage=Stage.done, output_dir=str(out))


def test_a_rehearsal_json_of_the_old_format_is_skipped_with_a_warning(tmp_path: Path) -> None:
    good, old, torn = (done_job(tmp_path, v) for v in ("good", "old", "torn"))
    (Path(good.output_dir) / REHEARSAL_FILE).write_text(
        rehearsed((1, 3000.0), (2, 4000.0)).model_dump_json())
    (Path(old.output_dir) / REHEARSAL_FILE).write_text(json.dumps({
        "micro_batch": 1, "batch_size": 16, "accumulation": 16, "device": "cpu",
        "precision": "fp32", "memory_source": "process_peak_rss", "peak_memory_mb": 3000.0,
        "peak_allocated_mb": None, "flops_per_micro_batch": 1e9, "step_seconds": 1.0}))
    (Path(torn.output_dir) / REHEARSAL_FILE).write_text('{"batch_size": 16, "poi')
    run = RunState(run_id="r", preset="full", started=0.0, command="rehearse",
                   jobs=[good, old, torn])
    with collect_warnings() as lines:
        found = measurements(run)
    assert list(found) == ["good"]
    assert found["good"].other_phases_mb == 0.0 and len(found["good"].points) == 2
    assert len(lines) == 2
    assert "old" in lines[0] and "missing field 'points'" in lines[0]
    assert "old is left out of the plan" in lines[0]
    assert "torn" in lines[1] and "not valid JSON" in lines[1]


# ---------------------------------------------------------------------------- a run's peak


def finished_run_job(tmp_path: Path, variant: str, *, device: str, micro: int, peak: float,
                     rehearsal: bool = False) -> JobState:
    """A done training job whose results.json reports ``peak`` MB at ``micro`` clips."""
    job = done_job(tmp_path / device, variant)
    row = {"mse": 1.0, "mae": 1.0, "psnr": 30.0, "ssim": 0.9, "mse_per_pixel": 0.01,
           "per_frame": {"mse": [1.0]}}
    job.results_path.write_text(json.dumps({
        "schema": 1, "variant": variant, "preset": "full", "seed": 0, "status": "success",
        "config": {"train": {"micro_batch": micro, "accumulation": 16 // micro},
                   "rehearsal": rehearsal},
        "environment": {"python": "3.11", "torch": "2", "device": device, "cuda": None,
                        "platform": "linux", "threads": 1},
        "parameters": {"trainable": 1, "frozen": 1}, "history": [],
        "final": {name: row for name in ("model", "black", "copy_last", "oracle")},
        "timings": {"wall_s": 1.0, "train_s": 1.0, "samples_per_s": 1.0,
                    "peak_memory_mb": peak},
        "artifacts": {"checkpoint": None, "frames": None}}))
    return job


def test_a_runs_peak_updates_the_plan_of_its_device_kind_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gpus = [Gpu(0, 24576, 24576)]
    for device in ("cpu", "cuda:0"):
        write_plan(build_plan("full", {"a": rehearsed((1, 3000.0), (2, 4000.0), device=device),
                                       "b": rehearsed((1, 2000.0), (2, 2500.0), device=device)},
                              gpus), tmp_path / "runs" / device, home)
    cuda_before = latest_plan_path(home, "full", "cuda").read_text()
    before = load_plan(home, "full", "cpu")
    assert before is not None and [j.micro_batch for j in before.jobs] == [16, 16]
    before_b = before.job("b")
    assert before_b is not None and before_b.gpus == []  # a's 19.5 GB leave too little
    # a ran at 16 clips and peaked at 23 GB, more than the line's 18 GB: 16 clips no longer
    # fit the 24 GB GPU with the margin, 8 do
    jobs = [finished_run_job(tmp_path, "a", device="cpu", micro=16, peak=23000.0),
            finished_run_job(tmp_path / "rehearsal", "b", device="cpu", micro=16, peak=1.0,
                             rehearsal=True)]
    (updated,) = fold_run_peaks(home, "20250101-000000", jobs)
    a, b = updated.job("a"), updated.job("b")
    assert a is not None and b is not None
    assert (a.micro_batch, a.accumulation, a.memory_basis) == (8, 2, "extrapolated")
    assert a.memory_model().at(16) == (23000.0, "measured")
    assert "22.5 GB at micro-batch 16 measured by run 20250101-000000" in a.note
    assert [p.source for p in a.measured] == ["rehearsal", "rehearsal", "run 20250101-000000"]
    assert b.measured == before_b.measured  # a rehearsal's results are not a run's peak
    assert b.gpus == [0]  # placed again: a at 8 clips leaves room for b
    assert load_plan(home, "full", "cpu") == updated
    assert latest_plan_path(home, "full", "cuda").read_text() == cuda_before

    cuda_job = finished_run_job(tmp_path / "gpu", "a", device="cuda:0", micro=4, peak=9000.0)
    (on_cuda,) = fold_run_peaks(home, "20250102-000000", [cuda_job])
    cuda_a = on_cuda.job("a")
    assert cuda_a is not None and cuda_a.memory_model().at(4) == (9000.0, "measured")
    assert load_plan(home, "full", "cpu") == updated  # the CPU plan did not learn it


def test_a_runs_peak_without_a_plan_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    job = finished_run_job(tmp_path, "a", device="cpu", micro=16, peak=22000.0)
    assert fold_run_peaks(home, "20250101-000000", [job]) == []
    assert not (home / "plans").exists()


# ---------------------------------------------------------------------------- config


def test_per_preset_resources_and_inputs_are_validated(tmp_path: Path) -> None:
    (tmp_path / "branches" / "a").mkdir(parents=True)
    base = ("presets: {micro: {}, tiny: {}}\nvariants:\n  - name: a\n    branch: b\n"
            "    folder: branches/a\n")
    cfg = parse_config(base + "    presets:\n      tiny: {resources: {gpus: 0}, "
                       "train_args: [--x, '1']}\ninputs:\n  - {name: m, path: m.pt, "
                       "pass_as: --motion, presets: [tiny]}\n", root=tmp_path)
    (variant,) = cfg.variants
    assert variant.resources_at("tiny").gpus == 0 and variant.resources_at("micro").gpus == 1
    assert variant.train_args_at("tiny") == ["--x", "1"] and variant.train_args_at("micro") == []
    with pytest.raises(ConfigError, match="unknown preset 'full'"):
        parse_config(base + "    presets: {full: {}}\n", root=tmp_path)
    with pytest.raises(ConfigError, match=r"inputs\[0\].presets\[0\]: unknown preset"):
        parse_config(base + "inputs:\n  - {name: m, path: m.pt, pass_as: --m, "
                     "presets: [full]}\n", root=tmp_path)


# ---------------------------------------------------------------------------- end to end

ASSETS = '''\
import argparse, json, pathlib
p = argparse.ArgumentParser(); p.add_argument("--preset"); p.add_argument("--output")
a = p.parse_args()
out = pathlib.Path(a.output)
(out / "motion-stand-in.pt").write_text("random weights")
(out / "assets.json").write_text(json.dumps({
    "env": {"FAKE_ASSET": str(out / "motion-stand-in.pt")},
    "inputs": {"motion": str(out / "motion-stand-in.pt")}}))
'''


def study_with_inputs(repo: Path) -> None:
    (repo / "shared" / "assets.py").write_text(ASSETS)
    config = CONFIG.replace("  tiny: {}\n", "  tiny: {rehearsal_assets: shared.assets}\n")
    config += ("inputs:\n  - name: motion\n    path: ckpt/real.pt\n    pass_as: --motion\n"
               "    presets: [tiny]\n    variants: [alpha]\n")
    config = config.replace(
        "    folder: branches/beta\n",
        "    folder: branches/beta\n    presets:\n      tiny:\n        resources: {gpus: 0}\n")
    (repo / "config.yaml").write_text(config)
    commit_all(repo, "inputs, stand-ins, per-preset resources")


def results_of(job: dict) -> dict:
    return json.loads((Path(job["output_dir"]) / "results.json").read_text())


def test_rehearsal_measures_each_job_alone_and_writes_the_plan(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_with_inputs(spawned)
    result = runner.invoke(app, ["train", "--rehearse", "--plan-gpus", "0:4096", "--json",
                                 "--plain"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["command"] == "rehearse"
    jobs = {j["name"]: j for j in run["jobs"]}
    assert sorted(jobs) == ["alpha", "beta"]  # one job a variant measures both sizes
    assert all(j["stage"] == "done" for j in jobs.values())
    spans = sorted((results_of(j)["start"], results_of(j)["end"]) for j in jobs.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # one at a time
    alpha = json.loads((Path(jobs["alpha"]["output_dir"]) / "rehearsal.json").read_text())
    stand_in = str(Path(run["artifacts"]["rehearsal-assets"]).parent / "motion-stand-in.pt")
    assert [p["micro_batch"] for p in alpha["points"]] == [1, 2]
    assert alpha["stand_in"] == stand_in
    assert alpha["motion"] == stand_in  # the input's stand-in, not ckpt/real.pt
    argv = results_of(jobs["beta"])["argv"]
    assert "--rehearse" in argv and "--micro-batch" not in argv

    plan = json.loads(Path(run["artifacts"]["plan"]).read_text())
    # memory(m) = max(1000 + 500 m, 1200 for evaluation); on 4 GB with the context and
    # slack, 2 clips a micro-batch
    assert {j["variant"]: j["micro_batch"] for j in plan["jobs"]} == {"alpha": 2, "beta": 2}
    assert {j["variant"]: j["accumulation"] for j in plan["jobs"]} == {"alpha": 4, "beta": 4}
    assert {(j["precision"], j["other_phases_mb"]) for j in plan["jobs"]} == {("fp32", 1200.0)}
    assert sorted(len(j["gpus"]) for j in plan["jobs"]) == [0, 1]  # the second one waits
    assert load_plan(orch_env, "tiny", "cpu") is not None
    again = runner.invoke(app, ["train", "--rehearse", "--plan-gpus", "0:4096", "--plain"])
    assert "plan for tiny (measured on cpu in fp32" in again.stdout
    assert "2 x 4" in again.stdout and "2.0 GB (measured)" in again.stdout

    submitted: dict[str, Request] = {}
    submit = Scheduler.submit

    def recording_submit(self: Scheduler[str], key: str, request: Request) -> None:
        submitted[key] = request
        submit(self, key, request)

    monkeypatch.setattr(Scheduler, "submit", recording_submit)
    trained = runner.invoke(app, ["train", "--json", "--plain"])  # follows the plan
    assert trained.exit_code == 0, trained.output
    # With the plan's run time: 2 epochs of 4 steps of 8e9 FLOPs; evaluations (2 epochs + the
    # final model pass) x 1e9 + 2e9 of final rows, on 2 clips; at 100 TFLOP/s.
    assert {name[:5]: r.work_s for name, r in submitted.items()} == pytest.approx(
        {"alpha": (2 * 4 * 8e9 + 10e9) / 100e12, "beta": (2 * 4 * 8e9 + 10e9) / 100e12})
    for job in json.loads(trained.stdout)["jobs"]:
        assert job["micro_batch"] == 2 and job["memory_basis"] == "plan"
        argv = results_of(job)["argv"]
        assert argv[argv.index("--micro-batch") + 1] == "2"
        assert results_of(job)["device"] == "cpu"
    alpha_argv = results_of(json.loads(trained.stdout)["jobs"][0])["argv"]
    assert alpha_argv[alpha_argv.index("--motion") + 1] == str(spawned / "ckpt" / "real.pt")

    # A run that peaks at 3.5 GB at 2 clips teaches the plan: 2 clips no longer fit 4 GB.
    monkeypatch.setenv("FAKE_PEAK_MB", "3500")
    peaked = runner.invoke(app, ["train", "alpha", "--json", "--plain"])
    assert peaked.exit_code == 0, peaked.output
    learned = load_plan(orch_env, "tiny", "cpu")
    assert learned is not None
    alpha_plan = learned.job("alpha")
    assert alpha_plan is not None and (alpha_plan.micro_batch, alpha_plan.accumulation) == (1, 8)
    assert alpha_plan.memory_model().at(2) == (3500.0, "measured")
    assert f"measured by run {json.loads(peaked.stdout)['run_id']}" in alpha_plan.note
    follows = runner.invoke(app, ["train", "alpha", "--json", "--plain"])
    (job,) = json.loads(follows.stdout)["jobs"]
    assert job["micro_batch"] == 1


def test_device_is_passed_explicitly_and_resources_differ_per_preset(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_with_inputs(spawned)
    monkeypatch.setenv("ORCH_GPUS", "0:8192")
    result = runner.invoke(app, ["train", "--json", "--plain"])
    assert result.exit_code == 0, result.output
    jobs = {j["variant"]: j for j in json.loads(result.stdout)["jobs"]}
    assert results_of(jobs["alpha"])["device"] == "cuda"  # planned on the GPU, told so
    assert results_of(jobs["alpha"])["cuda_visible_devices"] == "0"
    assert results_of(jobs["beta"])["device"] == "cpu"  # gpus: 0 at tiny
    assert results_of(jobs["beta"])["motion"] is None  # the input serves alpha only


def test_out_of_memory_retries_with_half_the_micro_batch(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OOM_ABOVE", "2")
    result = runner.invoke(app, ["train", "alpha", "--json", "--plain"])
    assert result.exit_code == 0, result.output
    (job,) = json.loads(result.stdout)["jobs"]
    assert job["stage"] == "done" and job["micro_batch"] == 2
    assert job["retries"] == ["out of memory at micro-batch 8; retried at 4",
                              "out of memory at micro-batch 4; retried at 2"]
    assert results_of(job)["micro_batch"] == 2
    status = runner.invoke(app, ["status"])
    assert "retried at 2" in status.stdout
    report = runner.invoke(app, ["compare", "--json"])
    (row,) = json.loads(report.stdout)["rows"]
    assert "OOM: retried down to micro-batch 2" in row["flags"]


def test_out_of_memory_at_one_clip_fails_with_its_reason(
    spawned: Path, orch_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OOM_ABOVE", "0")
    result = runner.invoke(app, ["train", "alpha", "--json", "--plain"])
    assert result.exit_code == 5
    (job,) = json.loads(result.stdout)["jobs"]
    assert job["stage"] == "failed" and job["reason"].startswith("CUDA out of memory")
    assert len(job["retries"]) == 3 and job["micro_batch"] == 1
