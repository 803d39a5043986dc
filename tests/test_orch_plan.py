"""The rehearsal, its plan, per-preset inputs and resources, the device flag and the
out-of-memory retry: the planner on its own, then orch end to end on the fake study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli.main import app
from orchestrator.config import parse_config
from orchestrator.devices import Gpu
from orchestrator.errors import ConfigError
from orchestrator.plan import (
    CUDA_CONTEXT_MB,
    Measurement,
    MemoryModel,
    build_plan,
    choose_micro_batch,
    load_plan,
)
from tests.orch_fixtures import *  # noqa: F403
from tests.orch_fixtures import CONFIG, commit_all

runner = CliRunner()


def measured(micro: int, peak: float, batch: int = 16) -> Measurement:
    return Measurement(micro_batch=micro, batch_size=batch, peak_memory_mb=peak,
                       memory_source="process_peak_rss", device="cpu",
                       flops_per_micro_batch=2e12 * micro, step_seconds=1.0)


# ---------------------------------------------------------------------------- the planner


def test_two_points_give_the_fixed_part_and_the_part_per_clip() -> None:
    model = MemoryModel.fit([measured(2, 9000.0), measured(1, 5000.0)])
    assert (model.fixed_mb, model.per_clip_mb) == (1000.0, 4000.0)
    assert model.at(1) == (5000.0, "measured")
    assert model.at(16) == (65000.0, "extrapolated")


def test_the_largest_dividing_micro_batch_that_fits_is_chosen() -> None:
    model = MemoryModel.fit([measured(1, 6000.0), measured(2, 11000.0)])
    # 80 GB: 16 clips need 81 GB + context and slack: too much; 8 clips (41 GB) fit.
    assert choose_micro_batch(model, 16, 81920.0) == (8, True)
    assert choose_micro_batch(model, 16, 7500.0) == (1, True)
    assert choose_micro_batch(model, 16, 5000.0) == (1, False)  # not even one clip
    assert choose_micro_batch(model, 16, None) == (16, True)  # no GPU: the whole batch


def test_plan_places_jobs_and_names_the_one_that_fits_nowhere() -> None:
    plan = build_plan("full", {
        "big": [measured(1, 30000.0), measured(2, 50000.0)],
        "small": [measured(1, 3000.0), measured(2, 4000.0)],
        "huge": [measured(1, 90000.0), measured(2, 170000.0)],
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
    spawned: Path, orch_env: Path
) -> None:
    study_with_inputs(spawned)
    result = runner.invoke(app, ["train", "--rehearse", "--plan-gpus", "0:4096", "--json",
                                 "--plain"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)
    assert run["command"] == "rehearse"
    jobs = {j["name"]: j for j in run["jobs"]}
    assert sorted(jobs) == ["alpha-mb1", "alpha-mb2", "beta-mb1", "beta-mb2"]
    assert all(j["stage"] == "done" for j in jobs.values())
    spans = sorted((results_of(j)["start"], results_of(j)["end"]) for j in jobs.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # one at a time
    alpha = json.loads((Path(jobs["alpha-mb2"]["output_dir"]) / "rehearsal.json").read_text())
    stand_in = str(Path(run["artifacts"]["rehearsal-assets"]).parent / "motion-stand-in.pt")
    assert alpha["micro_batch"] == 2 and alpha["stand_in"] == stand_in
    assert alpha["motion"] == stand_in  # the input's stand-in, not ckpt/real.pt
    assert "--rehearse" in results_of(jobs["beta-mb1"])["argv"]

    plan = json.loads(Path(run["artifacts"]["plan"]).read_text())
    # memory(m) = 1000 + 500 m; on 4 GB with the context and slack, 2 clips a micro-batch
    assert {j["variant"]: j["micro_batch"] for j in plan["jobs"]} == {"alpha": 2, "beta": 2}
    assert {j["variant"]: j["accumulation"] for j in plan["jobs"]} == {"alpha": 4, "beta": 4}
    assert sorted(len(j["gpus"]) for j in plan["jobs"]) == [0, 1]  # the second one waits
    assert load_plan(orch_env, "tiny", "cpu") is not None
    again = runner.invoke(app, ["train", "--rehearse", "--plan-gpus", "0:4096", "--plain"])
    assert "plan for tiny" in again.stdout and "2 x 4" in again.stdout

    trained = runner.invoke(app, ["train", "--json", "--plain"])  # follows the plan
    assert trained.exit_code == 0, trained.output
    for job in json.loads(trained.stdout)["jobs"]:
        assert job["micro_batch"] == 2 and job["memory_basis"] == "plan"
        argv = results_of(job)["argv"]
        assert argv[argv.index("--micro-batch") + 1] == "2"
        assert results_of(job)["device"] == "cpu"
    alpha_argv = results_of(json.loads(trained.stdout)["jobs"][0])["argv"]
    assert alpha_argv[alpha_argv.index("--motion") + 1] == str(spawned / "ckpt" / "real.pt")


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
