"""joint-i3d's drift baseline (the pretrained tokenizer's codes of the probe clips) is computed
on the device the experiment runs on, in full precision, before any training step."""

from __future__ import annotations

import pytest
import torch

from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.model import build_experiment
from branches.joint_i3d.tests.test_gate import write_micro_i3d
from branches.joint_i3d.train import load_motion
from shared.data import TrajectoryVideos
from shared.testing import gate_inputs

PROBE_CLIPS = 3


def build(tmp_path):
    """The micro experiment, and the devices of every encoder input since it was built."""
    config = joint_i3d_config("micro")
    write_micro_i3d(tmp_path / "motion.ckpt")
    tokenizer, train_set = gate_inputs(config.study, tmp_path)
    devices: list[torch.device] = []
    tokenizer.encoder.register_forward_pre_hook(lambda m, args: devices.append(args[0].device))
    probe_set = TrajectoryVideos(config.study.data, split="eval", size=PROBE_CLIPS)
    backbone = load_motion(config, str(tmp_path / "motion.ckpt"))
    experiment = build_experiment(config, backbone=backbone, tokenizer=tokenizer,
                                  train_set=train_set, probe_set=probe_set,
                                  train_clips=config.study.train.train_clips)
    return experiment, devices


@pytest.fixture()
def pretrained_codes(tmp_path):
    (tmp_path / "reference").mkdir()
    experiment, _ = build(tmp_path / "reference")
    with torch.no_grad():
        return experiment.tokenizer.eval().encode(experiment.probe_bcthw)[0]


def test_baseline_is_computed_on_the_experiments_device_not_at_construction(tmp_path):
    experiment, devices = build(tmp_path)
    assert devices == [] and experiment.probe_codes_start is None
    # The meta device stands for a GPU: whatever computes the baseline must run there.
    experiment.to(torch.device("meta"))
    assert devices == [torch.device("meta")]
    assert experiment.probe_codes_start.device == torch.device("meta")
    assert experiment.probe_codes_start.shape == (PROBE_CLIPS, 18, 3, 4, 4)
    experiment.to(torch.device("meta"))
    assert len(devices) == 1  # once: later moves only move it


def test_baseline_on_the_cpu_has_the_numbers_of_the_pretrained_tokenizer(
        tmp_path, pretrained_codes):
    experiment, devices = build(tmp_path)
    experiment.to(torch.device("cpu"))
    assert devices == [torch.device("cpu")]
    assert torch.equal(experiment.probe_codes_start, pretrained_codes)
    assert experiment.epoch_metrics()["code_bits_changed"] == 0


def test_without_a_move_the_first_step_computes_it_first_in_full_precision(
        tmp_path, pretrained_codes):
    experiment, _ = build(tmp_path)
    batch = next(experiment.train_batches(torch.arange(2), 2))
    experiment.trainable.train()
    # The loop's autocast (bf16 here) must not reach the baseline: the drift is measured in
    # fp32, outside autocast, and bf16 codes would count rounding as drift.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = experiment.loss(batch)
    assert torch.equal(experiment.probe_codes_start, pretrained_codes)
    loss.backward()
    torch.optim.SGD(experiment.tokenizer.parameters(), lr=1.0).step()
    assert experiment.epoch_metrics()["code_bits_changed"] > 0


def test_drift_oracle_reuses_the_whole_clip_codes_and_equals_the_oracle(tmp_path):
    """epoch_metrics decodes the oracle from the codes it already has; the figure is the
    experiment's own oracle's, with one whole-clip encode fewer."""
    from shared.metrics import clip_metrics

    experiment, devices = build(tmp_path)
    experiment.to(torch.device("cpu"))
    encodes = len(devices)
    figures = experiment.epoch_metrics()
    # One whole-clip encode and one of the context: no second encode of the whole clip.
    assert len(devices) - encodes == 2
    probe, c = experiment.probe_bcthw, experiment.layout.context_frames
    oracle = experiment.oracle(probe[:, :, :c], probe[:, :, c:])
    assert figures["oracle_psnr"] == pytest.approx(
        float(clip_metrics(oracle, probe[:, :, c:])["psnr"].mean()), abs=1e-9)
