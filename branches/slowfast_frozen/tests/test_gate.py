"""The slowfast-frozen gate (micro preset, CPU, seconds): the four tests of the contract, the
predictor's use of its context and the alignment of its targets, SlowFast staying frozen and
its features reaching the prediction.

Each test's docstring names the broken model it must catch; tests/test_gate_checks.py builds
each of those and shows that the test's check fails on it.
"""

from __future__ import annotations

import pytest

from branches.slowfast_frozen.config import slowfast_frozen_config
from branches.slowfast_frozen.tests.checks import (
    check_features_reach_the_prediction,
    check_parameter_counts_match_config,
    check_slowfast_checkpoint_loads,
    check_slowfast_stays_frozen,
    check_training,
    micro_experiment,
    write_micro_slowfast,
)
from branches.slowfast_frozen.train import load_condition
from shared.errors import CheckpointError
from shared.latent_experiment import LatentLayout
from shared.motion.slowfast import slowfast_config
from shared.testing import (
    check_prediction_ignores_future,
    check_prediction_uses_context,
    check_targets_are_future_latents,
    check_tokenizer_checkpoint_round_trip,
    check_training_inputs_ignore_future,
    micro_clips,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config():
    return slowfast_frozen_config("micro")


@pytest.fixture(scope="module")
def layout(config):
    # From the config, not from the experiment: a wrong layout in the model is what is tested.
    return LatentLayout(config.study.data.frames, config.study.data.context_frames)


@pytest.fixture()
def experiment(config, tmp_path):
    return micro_experiment(tmp_path, config)


def test_tokenizer_and_slowfast_load_their_layouts(config, tmp_path):
    """Catches: a tokenizer loader that takes the raw weights instead of the EMA ones; a
    SlowFast loader that skips the BatchNorm statistics."""
    check_tokenizer_checkpoint_round_trip(tmp_path)
    check_slowfast_checkpoint_loads(write_micro_slowfast(tmp_path))
    # Without --motion the entry point names the command that makes one.
    with pytest.raises(CheckpointError, match="shared.motion.pretrain --backbone slowfast"):
        load_condition(config, None)


def test_parameter_counts_match_config(config, experiment):
    """Catches: a parameter count that changed (a predictor a block deeper than the config); a
    frozen SlowFast left with requires_grad on."""
    check_parameter_counts_match_config(experiment, config)


def test_forward_shape_finite_and_no_leakage(layout, experiment):
    """Catches: a prediction that sees the future (the true future is changed, the prediction
    must not); training inputs (context codes, SlowFast features) computed with the future
    frames."""
    clips = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clips)
    check_training_inputs_ignore_future(experiment, clips, altered, experiment.frozen_targets)
    feature_dim = slowfast_config("micro").feature_dim
    assert experiment.frozen_targets(clips)["condition"].shape == (3, 1, feature_dim)


def test_prediction_uses_its_context(layout, experiment):
    """Catches: a predictor that ignores its context codes (even one that still reads the
    SlowFast features of the same frames)."""
    check_prediction_uses_context(experiment, layout, micro_clips(3))


def test_targets_are_the_future_latents(layout, experiment):
    """Catches: training targets shifted by one latent frame."""
    check_targets_are_future_latents(experiment, layout, micro_clips(3),
                                     experiment.frozen_targets)


def test_training_step_updates_only_trainable_and_loss_falls(experiment):
    """Catches: a frozen part that trains (gradients reaching SlowFast or the tokenizer); a
    predictor parameter cut off from the loss; a loss that does not fall on a fixed batch."""
    check_training(experiment)


def test_slowfast_stays_in_eval_mode_and_keeps_its_statistics(experiment):
    """Catches: a frozen SlowFast that a parent's ``.train()`` puts in train mode, so its
    BatchNorm statistics move with every training batch."""
    check_slowfast_stays_frozen(experiment)


def test_features_reach_the_prediction(layout, experiment):
    """Catches: a predictor that ignores its SlowFast features (or mixes clips' features)."""
    check_features_reach_the_prediction(experiment, layout)
