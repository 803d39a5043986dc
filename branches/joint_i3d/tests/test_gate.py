"""The joint-i3d gate (micro preset, CPU, seconds): the four tests of the contract, the
predictor's use of its context and the alignment of its targets, and the I3D backbone's frozen
/ trainable behaviour.

Each test's docstring names the broken model it must catch; tests/test_gate_checks.py builds
each of those and shows that the test's check fails on it.
"""

from __future__ import annotations

import pytest

from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.tests.checks import (
    check_i3d_checkpoint_loads,
    check_i3d_frozen_or_trainable,
    check_joint_training,
    check_parameter_counts_match_config,
    make_experiment,
    write_micro_i3d,  # noqa: F401 (other tests import it from here)
)
from shared.latent_experiment import LatentLayout
from shared.testing import (
    check_prediction_ignores_future,
    check_prediction_uses_context,
    check_targets_are_future_latents,
    check_tokenizer_checkpoint_round_trip,
    check_training_inputs_ignore_future,
    micro_clips,
)


def video_batch(video):
    """A training batch of whole clips, as ``train_batches`` makes it (the loss fills in the
    reconstruction weights)."""
    return {"video": video}


@pytest.fixture(scope="module")
def layout():
    # From the config, not from the experiment: a wrong layout in the model is what is tested.
    data = joint_i3d_config("micro").study.data
    return LatentLayout(data.frames, data.context_frames)


@pytest.fixture()
def setup(tmp_path):
    return make_experiment(tmp_path)


def test_tokenizer_and_i3d_load_official_layouts(tmp_path):
    """Catches: a tokenizer loader that takes the raw weights instead of the EMA ones; an I3D
    loader that skips the BatchNorm statistics."""
    check_tokenizer_checkpoint_round_trip(tmp_path)
    check_i3d_checkpoint_loads(tmp_path)


@pytest.mark.parametrize("motion_trainable", [False, True])
def test_parameter_counts_match_config(tmp_path, motion_trainable):
    """Catches: a parameter count that changed (a predictor a block deeper than the config); a
    frozen I3D left with requires_grad on."""
    config, experiment = make_experiment(tmp_path, motion_trainable=motion_trainable)
    check_parameter_counts_match_config(experiment, config)


def test_forward_shape_finite_and_no_leakage(layout, setup):
    """Catches: a prediction that sees the future (the true future is changed, the prediction
    must not); training inputs (context codes, motion tokens) computed with the future
    frames."""
    _, experiment = setup
    clips = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clips)
    check_training_inputs_ignore_future(experiment, clips, altered, video_batch)


def test_prediction_uses_its_context(layout, setup):
    """Catches: a predictor that ignores its context codes (even one that still reads the
    motion tokens made from the same frames)."""
    check_prediction_uses_context(setup[1], layout, micro_clips(3))


def test_targets_are_the_future_latents(layout, setup):
    """Catches: training targets shifted by one latent frame."""
    check_targets_are_future_latents(setup[1], layout, micro_clips(3), video_batch)


def test_training_step_updates_only_trainable_and_loss_falls(setup):
    """Catches: a frozen I3D that trains (gradients reach it); a tokenizer frozen by mistake
    (no gradient reaches its encoder and decoder); an oracle that stays the pretrained
    tokenizer's while the tokenizer moves; a loss that does not fall on a fixed batch."""
    check_joint_training(setup[1])


@pytest.mark.parametrize("motion_trainable", [False, True])
def test_i3d_frozen_or_trainable_as_configured(tmp_path, motion_trainable):
    """Catches: a frozen I3D whose BatchNorm statistics move in a training step (in train mode
    under the loop's ``.train()``); a trainable I3D that stays frozen."""
    _, experiment = make_experiment(tmp_path, motion_trainable=motion_trainable)
    check_i3d_frozen_or_trainable(experiment, motion_trainable)
