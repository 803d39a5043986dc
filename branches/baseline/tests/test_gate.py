"""The baseline's four-test gate (micro preset, CPU, seconds)."""

from __future__ import annotations

import copy

import pytest
import torch

from branches.baseline.config import baseline_config
from branches.baseline.model import build_experiment
from shared.data import TrajectoryVideos
from shared.latent_experiment import LatentLayout
from shared.magvit import load_tokenizer
from shared.testing import (
    check_tokenizer_checkpoint_round_trip,
    expected_predictor_parameters,
    micro_clips,
    micro_tokenizer,
    write_micro_tokenizer,
)


@pytest.fixture(scope="module")
def config():
    return baseline_config("micro")


@pytest.fixture()
def experiment(config, tmp_path):
    torch.manual_seed(0)
    study = config.study
    tokenizer = load_tokenizer(write_micro_tokenizer(tmp_path / "tokenizer.ckpt"))
    train_set = TrajectoryVideos(study.data, split="train", size=study.train.train_clips)
    return build_experiment(config, tokenizer=tokenizer, train_set=train_set,
                            train_clips=study.train.train_clips, cache=None)


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
    context, future = clip[:, :, : layout.context_frames], clip[:, :, layout.context_frames :]
    prediction = experiment.predict(context, layout.future_frames)
    assert prediction.shape == future.shape
    assert torch.isfinite(prediction).all()

    # The true future must not reach the context latents the predictor is trained on
    # (GroupNorm pools over the whole clip, so encoding the full clip would leak it) ...
    altered = clip.clone()
    altered[:, :, layout.context_frames :] = torch.rand_like(future) * 2 - 1
    original_targets = experiment.frozen_targets(clip)
    altered_targets = experiment.frozen_targets(altered)
    assert torch.equal(original_targets["context_codes"], altered_targets["context_codes"])
    assert not torch.equal(original_targets["future_codes"], altered_targets["future_codes"])
    # ... nor the prediction made from the context.
    assert torch.equal(experiment.predict(altered[:, :, : layout.context_frames],
                                          layout.future_frames), prediction)


def test_training_step_updates_only_trainable_and_loss_falls(config, experiment):
    batch = next(experiment.train_batches(torch.arange(8), 8))
    trainable = {n: p for n, p in experiment.predictor.named_parameters()}
    frozen_before = copy.deepcopy(experiment.tokenizer.state_dict())
    trainable_before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.Adam(experiment.trainable.parameters(), lr=3e-3)

    losses = []
    for step in range(25):
        optimizer.zero_grad()
        loss, _ = experiment.loss(batch)
        loss.backward()
        if step == 0:
            missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum()]
            assert not missing, f"no gradient reached {missing}"
            assert all(p.grad is None for p in experiment.tokenizer.parameters())
        optimizer.step()
        losses.append(loss.item())

    assert losses[-1] < 0.8 * losses[0], losses
    for name, tensor in experiment.tokenizer.state_dict().items():
        assert torch.equal(tensor, frozen_before[name]), f"frozen {name} changed"
    assert all(not torch.equal(p, trainable_before[n]) for n, p in trainable.items())
