"""The baseline's four-test gate (micro preset, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from branches.baseline.config import baseline_config
from branches.baseline.model import build_experiment
from shared.latent_experiment import LatentLayout
from shared.testing import (
    check_prediction_ignores_future,
    check_tokenizer_checkpoint_round_trip,
    check_training_steps,
    expected_predictor_parameters,
    gate_inputs,
    micro_clips,
    micro_tokenizer,
)


@pytest.fixture(scope="module")
def config():
    return baseline_config("micro")


@pytest.fixture()
def experiment(config, tmp_path):
    tokenizer, train_set = gate_inputs(config.study, tmp_path)
    return build_experiment(config, tokenizer=tokenizer, train_set=train_set,
                            train_clips=config.study.train.train_clips, cache=None)


def test_tokenizer_loads_official_layout_and_reconstructs(config, tmp_path):
    check_tokenizer_checkpoint_round_trip(tmp_path)


def test_parameter_counts_match_config(config, experiment):
    expected_trainable = expected_predictor_parameters(config.study.predictor)
    expected_frozen = sum(p.numel() for p in micro_tokenizer().parameters())
    counts = experiment.parameter_counts()
    assert counts == {"trainable": expected_trainable, "frozen": expected_frozen}
    assert all(not p.requires_grad for p in experiment.tokenizer.parameters())
    assert all(p.requires_grad for p in experiment.predictor.parameters())


def test_forward_shape_finite_and_no_leakage(config, experiment):
    layout = LatentLayout(config.study.data.frames, config.study.data.context_frames)
    clip = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clip)
    # The true future must not reach the context latents the predictor is trained on
    # (GroupNorm pools over the whole clip, so encoding the full clip would leak it).
    original_targets = experiment.frozen_targets(clip)
    altered_targets = experiment.frozen_targets(altered)
    assert torch.equal(original_targets["context_codes"], altered_targets["context_codes"])
    assert not torch.equal(original_targets["future_codes"], altered_targets["future_codes"])


def test_training_step_updates_only_trainable_and_loss_falls(experiment):
    batch = next(experiment.train_batches(torch.arange(8), 8))
    optimizer = torch.optim.Adam(experiment.trainable.parameters(), lr=3e-3)
    check_training_steps(experiment, batch, optimizer, steps=25,
                         frozen={"tokenizer": experiment.tokenizer})
