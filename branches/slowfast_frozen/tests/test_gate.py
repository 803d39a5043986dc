"""The slowfast-frozen gate (micro preset, CPU, seconds): the four tests of the contract, plus
SlowFast staying frozen and its features reaching the prediction."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from branches.slowfast_frozen.config import slowfast_frozen_config
from branches.slowfast_frozen.model import SlowFastCondition, build_experiment
from branches.slowfast_frozen.train import load_condition
from shared.data import TRAJECTORY_CLASSES
from shared.errors import CheckpointError
from shared.latent_experiment import LatentLayout
from shared.motion.pretrain import save_motion_checkpoint
from shared.motion.slowfast import SlowFastR50, load_slowfast, slowfast_config
from shared.testing import (
    check_prediction_ignores_future,
    check_tokenizer_checkpoint_round_trip,
    check_training_steps,
    expected_predictor_parameters,
    gate_inputs,
    micro_clips,
    micro_tokenizer,
    randomise_batchnorm_statistics,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config():
    return slowfast_frozen_config("micro")


def micro_slowfast(seed: int = 0) -> SlowFastR50:
    """A micro SlowFast with seeded random weights and BN statistics (so a BN update shows)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SlowFastR50(slowfast_config("micro", num_classes=len(TRAJECTORY_CLASSES)))
        randomise_batchnorm_statistics(model)
    return model.eval()


@pytest.fixture()
def motion_path(tmp_path):
    return save_motion_checkpoint(micro_slowfast(), tmp_path / "motion", preset="micro")


@pytest.fixture()
def experiment(config, tmp_path, motion_path):
    tokenizer, train_set = gate_inputs(config.study, tmp_path)
    condition = load_condition(config, str(motion_path))
    return build_experiment(config, condition=condition, tokenizer=tokenizer,
                            train_set=train_set, train_clips=config.study.train.train_clips,
                            cache=None)


def test_tokenizer_and_slowfast_load_their_layouts(config, tmp_path, motion_path):
    check_tokenizer_checkpoint_round_trip(tmp_path)

    # The motion file is in pytorchvideo's layout: the public loader takes it strictly.
    assert "model_state" in torch.load(motion_path, weights_only=True)
    reference = micro_slowfast()
    public = load_slowfast(motion_path, config=copy.deepcopy(reference.config))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(public.state_dict()[name], tensor), name
    # Without --motion the entry point names the command that makes one.
    with pytest.raises(CheckpointError, match="shared.motion.pretrain --backbone slowfast"):
        load_condition(config, None)


def test_parameter_counts_match_config(config, experiment):
    feature_dim = slowfast_config("micro").feature_dim
    expected_trainable = expected_predictor_parameters(
        replace(config.study.predictor, condition_dim=feature_dim))
    expected_frozen = sum(t.numel() for t in micro_tokenizer().parameters()) \
        + sum(t.numel() for t in micro_slowfast().parameters())
    assert experiment.parameter_counts() == {"trainable": expected_trainable,
                                             "frozen": expected_frozen}
    slowfast = experiment.condition.features
    assert all(not t.requires_grad for t in experiment.tokenizer.parameters())
    assert all(not t.requires_grad for t in slowfast.parameters())
    assert all(t.requires_grad for t in experiment.predictor.parameters())


def test_forward_shape_finite_and_no_leakage(config, experiment):
    layout = LatentLayout(config.study.data.frames, config.study.data.context_frames)
    clip = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clip)
    # Changing the true future changes the training targets, but not what the predictor is
    # given (context latents, SlowFast features).
    original, changed = experiment.frozen_targets(clip), experiment.frozen_targets(altered)
    assert original["condition"].shape == (3, 1, slowfast_config("micro").feature_dim)
    assert torch.equal(original["context_codes"], changed["context_codes"])
    assert torch.equal(original["condition"], changed["condition"])
    assert not torch.equal(original["future_codes"], changed["future_codes"])


def test_training_step_updates_only_trainable_and_loss_falls(experiment):
    batch = next(experiment.train_batches(torch.arange(8), 8))
    optimizer = torch.optim.Adam(experiment.trainable.parameters(), lr=3e-3)
    check_training_steps(experiment, batch, optimizer, steps=25, frozen={
        "tokenizer": experiment.tokenizer, "slowfast": experiment.condition.module})


def test_slowfast_stays_in_eval_mode_and_keeps_its_statistics(experiment):
    slowfast = experiment.condition.features
    buffers_before = {n: b.clone() for n, b in slowfast.named_buffers()}
    # A parent calling .train() (as a training loop does) must not put BatchNorm in train mode.
    slowfast.train()
    experiment.trainable.train()
    assert not slowfast.backbone.training
    assert all(not m.training for m in slowfast.backbone.modules())
    # A training step that computes the features on the fly (no cache) leaves every buffer.
    batch = next(experiment.train_batches(torch.arange(4), 4))
    loss, _ = experiment.loss(batch)
    loss.backward()
    for name, buffer in slowfast.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), f"SlowFast buffer {name} changed"
    assert all(t.grad is None for t in slowfast.parameters())


def test_features_reach_the_prediction(config, experiment):
    layout = LatentLayout(config.study.data.frames, config.study.data.context_frames)
    clip = micro_clips(4)
    targets = experiment.frozen_targets(clip)
    grid = tuple(targets["future_codes"].shape[2:])
    experiment.predictor.eval()
    # At initialisation the features move a logit by about 1e-6 (they reach the future tokens
    # through attention alone), too little for a tolerance check; the gradient says it
    # exactly: each clip's logits depend on its own features and on no other clip's.
    condition = targets["condition"].clone().requires_grad_(True)
    logits = experiment.predictor(targets["context_codes"], grid, condition)
    logits[0].sum().backward()
    assert condition.grad is not None
    grad_per_clip = condition.grad.flatten(1).abs().sum(1)
    assert grad_per_clip[0] > 0 and torch.all(grad_per_clip[1:] == 0)
    logits = logits.detach()
    # And end to end: another backbone (other weights) gives other features and logits.
    other = SlowFastCondition(micro_slowfast(seed=1), time_resolved=False)
    context = clip[:, :, : layout.context_frames]
    with torch.no_grad():
        other_condition = other(context)
        assert not torch.allclose(other_condition, targets["condition"])
        assert not torch.equal(
            experiment.predictor(targets["context_codes"], grid, other_condition), logits)
    assert other.cache_key != experiment.condition.cache_key
