"""The shared training loop, end to end through the baseline's entry point (micro preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from branches.baseline import train as baseline_train
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.testing import write_micro_tokenizer

REQUIRED = {"schema", "variant", "preset", "seed", "status", "config", "environment",
            "parameters", "history", "metrics", "series", "images", "timings", "artifacts"}
ROWS = {"model", "black", "copy_last", "oracle"}


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_micro_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.ckpt")


def _run(output, tokenizer_path, *extra):
    return baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                                str(tokenizer_path), "--threads", "1", *extra])


def test_results_events_and_artifacts_follow_the_contract(tmp_path, tokenizer_path,
                                                          monkeypatch):
    predict_calls = []
    original_predict = FrozenTokenizerExperiment.predict

    def counting_predict(self, context, future_frames):
        predict_calls.append(context.shape[0])
        return original_predict(self, context, future_frames)

    monkeypatch.setattr(FrozenTokenizerExperiment, "predict", counting_predict)
    results = _run(tmp_path / "run", tokenizer_path)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert REQUIRED <= set(on_disk) and on_disk["status"] == "success"
    assert on_disk["schema"] == 2 and set(on_disk["metrics"]) == ROWS
    future_frames = results["config"]["study"]["data"]["frames"] - \
        results["config"]["study"]["data"]["context_frames"]
    for row in on_disk["metrics"].values():
        assert set(row) == {"mse", "mae", "psnr", "ssim", "mse_per_pixel", "sharpness",
                            "clips"}
    # each held-out clip's metrics, for paired comparisons
    eval_clips = results["config"]["train"]["eval_clips"]
    assert set(on_disk["per_example"]) == ROWS
    assert all(len(values) == eval_clips for row in on_disk["per_example"].values()
               for values in row.values())
    assert on_disk["metrics"]["black"]["sharpness"] == pytest.approx(0.0, abs=1e-6)
    assert on_disk["metrics"]["copy_last"]["sharpness"] > 0.5  # a real frame's detail
    for name, metric in (("psnr_per_frame", "psnr"), ("ssim_per_frame", "ssim"),
                         ("sharpness_per_frame", "sharpness")):
        series = on_disk["series"][name]
        assert (series["index"], series["metric"], set(series["rows"])) == \
            ("future frame", metric, ROWS)
        assert all(len(curve) == future_frames for curve in series["rows"].values())
    assert len(on_disk["history"]) == results["config"]["train"]["epochs"]
    assert (tmp_path / "run" / on_disk["artifacts"]["checkpoint"]).is_file()
    assert (tmp_path / "run" / on_disk["images"]["frames"]["path"]).is_file()
    assert "predicted future" in on_disk["images"]["frames"]["caption"]

    kinds = [e["event"] for e in read_events(tmp_path / "run" / "events.jsonl")]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert {"progress", "eval", "checkpoint"} <= set(kinds)
    # Each epoch is scored on the validation clips; the final numbers come from the held-out
    # clips, predicted once at the end (the strip reuses that pass): other clips, other
    # numbers.
    train = results["config"]["train"]
    last_eval = on_disk["history"][-1]["eval"]
    assert last_eval["clips"] == on_disk["metrics"]["model"]["clips"] == train["eval_clips"]
    assert on_disk["metrics"]["model"]["psnr"] != last_eval["psnr"]
    assert sum(predict_calls) == train["epochs"] * train["eval_clips"] + train["eval_clips"]
    # The model row is measured, not copied: it differs from every reference row.
    assert on_disk["metrics"]["model"]["psnr"] not in {
        on_disk["metrics"][name]["psnr"] for name in ("black", "copy_last", "oracle")}


def test_resume_after_interruption_gives_the_same_results(tmp_path, tokenizer_path, monkeypatch):
    uninterrupted = _run(tmp_path / "a", tokenizer_path, "--seed", "7")

    original = FrozenTokenizerExperiment.train_batches
    epochs_started = []

    def interrupted_in_epoch_two(self, order, batch_size):
        epochs_started.append(1)
        for step, batch in enumerate(original(self, order, batch_size)):
            if len(epochs_started) == 2 and step == 1:
                raise KeyboardInterrupt("killed mid-epoch")
            yield batch

    monkeypatch.setattr(FrozenTokenizerExperiment, "train_batches", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", tokenizer_path, "--seed", "7")
    monkeypatch.setattr(FrozenTokenizerExperiment, "train_batches", original)
    assert not (tmp_path / "b" / "results.json").exists()

    resumed = _run(tmp_path / "b", tokenizer_path, "--seed", "7", "--resume")
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["series"] == uninterrupted["series"]
    assert [h["train_loss"] for h in resumed["history"]] == \
        [h["train_loss"] for h in uninterrupted["history"]]

    events = read_events(tmp_path / "b" / "events.jsonl")
    assert any(e["event"] == "error" and e["kind"] == "interrupted" for e in events)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["resumed_from_epoch"] for s in starts] == [0, 1]


def test_bad_options_give_one_line_and_exit_code_2(tmp_path, capsys):
    from shared.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: baseline_train.main(["--preset", "nope", "--output", str(tmp_path)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" in err[0]


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_missing_cuda_device_fails_before_anything_loads(tmp_path, capsys, monkeypatch,
                                                           device):
    import torch

    from shared import entry
    from shared.errors import run_cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

    def no_load(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded before the device was checked")

    monkeypatch.setattr(entry, "load_study_tokenizer", no_load)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: baseline_train.main(["--preset", "micro", "--output", str(tmp_path),
                                             "--device", device]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0] and "CUDA_VISIBLE_DEVICES" in err[0]
    assert not (tmp_path / "events.jsonl").exists()


def test_missing_tokenizer_says_how_to_make_one(tmp_path, capsys):
    from shared.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: baseline_train.main(["--preset", "micro", "--output", str(tmp_path)]))
    assert exit_info.value.code == 3
    assert "shared.magvit.pretrain --preset micro" in capsys.readouterr().err


def test_slowfast_reuses_the_baseline_latents_and_caches_its_features_apart(
        tmp_path, tokenizer_path, monkeypatch):
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))  # empty, this test's own
    from branches.slowfast_frozen import train as slowfast_train
    from shared.data import TRAJECTORY_CLASSES
    from shared.motion.pretrain import save_motion_checkpoint
    from shared.motion.slowfast import SlowFastR50, slowfast_config

    motion = save_motion_checkpoint(
        SlowFastR50(slowfast_config("micro", num_classes=len(TRAJECTORY_CLASSES))).eval(),
        tmp_path / "motion", preset="micro")
    baseline = _run(tmp_path / "baseline", tokenizer_path)
    clips = baseline["config"]["train"]["train_clips"]

    def slowfast(output):
        slowfast_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                             str(tokenizer_path), "--motion", str(motion), "--threads", "1"])
        return {e["kind"]: e for e in read_events(output / "events.jsonl")
                if e["event"] == "cache"}

    first = slowfast(tmp_path / "slowfast")
    # Same frozen tokenizer and data: the baseline's latents, not one clip encoded again.
    assert (first["latent"]["hits"], first["latent"]["misses"]) == (clips, 0)
    assert (first["feature"]["hits"], first["feature"]["misses"]) == (0, clips)
    again = slowfast(tmp_path / "slowfast-again")
    assert (again["feature"]["hits"], again["feature"]["misses"]) == (clips, 0)
    assert first["feature"]["path"] != first["latent"]["path"]


def read_events(path: Path) -> list[dict]:
    """Every event of a finished job's events.jsonl, of any kind (orch reads only its own)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
