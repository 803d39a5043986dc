"""The baseline's gate (micro preset, CPU, seconds): the four tests of the contract, plus the
predictor's use of its context and the alignment of its targets.

Each test's docstring names the broken model it must catch; tests/test_gate_checks.py builds
each of those and shows that the test's check fails on it.
"""

from __future__ import annotations

import pytest

from branches.baseline.config import baseline_config
from branches.baseline.tests.checks import (
    check_parameter_counts_match_config,
    check_training,
    micro_experiment,
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


@pytest.fixture(scope="module")
def config():
    return baseline_config("micro")


@pytest.fixture(scope="module")
def layout(config):
    # From the config, not from the experiment: a wrong layout in the model is what is tested.
    return LatentLayout(config.study.data.frames, config.study.data.context_frames)


@pytest.fixture()
def experiment(config, tmp_path):
    return micro_experiment(tmp_path, config)


def test_tokenizer_loads_official_layout_and_reconstructs(tmp_path):
    """Catches: a loader that takes the official file's raw weights instead of its EMA ones."""
    check_tokenizer_checkpoint_round_trip(tmp_path)


def test_parameter_counts_match_config(config, experiment):
    """Catches: a parameter count that changed (a predictor a block deeper than the config)
    and a frozen tokenizer left with requires_grad on."""
    check_parameter_counts_match_config(experiment, config)


def test_forward_shape_finite_and_no_leakage(layout, experiment):
    """Catches: a prediction that sees the future (the true future is changed, the prediction
    must not); context latents for training encoded with the whole clip (GroupNorm pools over
    time, so the future would leak into them)."""
    clips = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clips)
    check_training_inputs_ignore_future(experiment, clips, altered, experiment.frozen_targets)


def test_prediction_uses_its_context(layout, experiment):
    """Catches: a predictor that ignores its context."""
    check_prediction_uses_context(experiment, layout, micro_clips(3))


def test_targets_are_the_future_latents(layout, experiment):
    """Catches: training targets shifted by one latent frame."""
    check_targets_are_future_latents(experiment, layout, micro_clips(3),
                                     experiment.frozen_targets)


def test_training_step_updates_only_trainable_and_loss_falls(experiment):
    """Catches: a frozen part that trains (gradients reaching the tokenizer), a predictor
    parameter cut off from the loss, a loss that does not fall on a fixed batch."""
    check_training(experiment)
