"""shared.motion.pretrain: micro runs of both backbones write public-layout files that the
public loaders take strictly, report held-out accuracy, and their loss falls."""

from __future__ import annotations

import json

import pytest
import torch

from shared.data import TRAJECTORY_CLASSES, TrajectoryVideos
from shared.errors import ConfigError
from shared.motion.i3d import InceptionI3d, load_i3d
from shared.motion.pretrain import (
    MotionClassifier,
    config_from_dict,
    evaluate,
    load_motion_backbone,
    main,
    motion_pretrain_config,
    pretrain,
)
from shared.motion.slowfast import SlowFastR50, load_slowfast
from shared.presets import study_preset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_run(metrics: dict, output, backbone: str) -> dict:
    assert metrics["backbone"] == backbone and metrics["chance"] == 0.25
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["eval"]["clips"] == motion_pretrain_config("micro", backbone).eval_clips
    history = metrics["history"]
    assert len(history) >= 3
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], history  # the loss falls
    on_disk = json.loads((output / "metrics.json").read_text())
    assert on_disk["accuracy"] == metrics["accuracy"]
    described = json.loads((output / "motion.json").read_text())
    assert described["backbone"] == backbone
    assert described["config"]["num_classes"] == len(TRAJECTORY_CLASSES)
    return described


def _held_out_accuracy(model, backbone: str) -> float:
    """Re-evaluate a loaded model the way the pretraining did."""
    config = motion_pretrain_config("micro", backbone)
    data = study_preset("micro").data
    eval_set = TrajectoryVideos(data, split="eval", size=config.eval_clips)
    return evaluate(MotionClassifier(model), eval_set, config, data.context_frames,
                    len(TRAJECTORY_CLASSES))["accuracy"]


def test_slowfast_micro_pretrain_writes_a_pytorchvideo_file(tmp_path):
    metrics = pretrain(motion_pretrain_config("micro", "slowfast"), output=tmp_path, threads=1,
                       log=lambda line: None)
    described = _check_run(metrics, tmp_path, "slowfast")
    payload = torch.load(tmp_path / "motion.ckpt", weights_only=True)
    assert set(payload["model_state"]) == set(SlowFastR50(
        config_from_dict("slowfast", described["config"])).state_dict())
    assert payload["config"] == config_from_dict("slowfast", described["config"]).__dict__

    # The public loader takes it strictly with the saved config; the helper finds the config
    # itself; both give the weights that scored the reported accuracy.
    public = load_slowfast(tmp_path / "motion.ckpt",
                           config=config_from_dict("slowfast", described["config"]))
    helper = load_motion_backbone(tmp_path / "motion.ckpt", backbone="slowfast")
    for name, tensor in public.state_dict().items():
        assert torch.equal(helper.state_dict()[name], tensor), name
    assert _held_out_accuracy(helper, "slowfast") == pytest.approx(metrics["accuracy"])


def test_i3d_micro_pretrain_writes_a_bare_state_dict(tmp_path):
    output = tmp_path / "i3d"
    metrics = main(["--backbone", "i3d", "--preset", "micro", "--output", str(output),
                    "--threads", "1"])
    described = _check_run(metrics, output, "i3d")
    payload = torch.load(output / "motion.ckpt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in payload.values())  # piergiaj layout
    config = config_from_dict("i3d", described["config"])
    public = load_i3d(output / "motion.ckpt", config=config)
    helper = load_motion_backbone(output / "motion.ckpt", backbone="i3d")
    assert isinstance(helper, InceptionI3d) and helper.config == config
    for name, tensor in public.state_dict().items():
        assert torch.equal(helper.state_dict()[name], tensor), name
    assert _held_out_accuracy(helper, "i3d") == pytest.approx(metrics["accuracy"])


def test_unknown_presets_say_what_to_do():
    with pytest.raises(ConfigError, match="--motion"):
        motion_pretrain_config("full", "slowfast")
    with pytest.raises(ConfigError, match="slowfast, i3d"):
        motion_pretrain_config("micro", "x3d")
