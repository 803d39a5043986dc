"""joint-i3d under the training loop's micro-batches: the reconstruction choice travels with the
clips (``recon_weight``), the per-clip terms add up exactly, the batch statistics nearly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.model import build_experiment, recon_selection
from branches.joint_i3d.tests.test_gate import write_micro_i3d
from branches.joint_i3d.train import load_motion
from shared.data import TrajectoryVideos
from shared.testing import gate_inputs
from shared.training import split_batch

BATCH = 8
RECON_CLIPS = 3  # does not divide the batch: micro-batches with 0, 1 or 2 chosen clips
# Only per-clip terms: L1, MSE, commitment (the per-sample entropy is per clip too, but the
# entropy term also holds the codebook entropy, a batch statistic).
PER_CLIP = {"recon_mse": 0.5, "commitment": 0.25, "entropy": 0.0, "decorrelation": 0.0}
# Batch statistics on: the defaults (bit correlation, weight 0.1), and with them the LFQ
# entropy term of the official objective (codebook entropy). Tolerances on the loss (absolute,
# of ~1.1 and ~0.37) and on the gradient (its relative change, over all parameters), for
# micro-batches of 1 clip; measured here: 2.5e-3 and 0.095 (defaults), 9.6e-3 and 0.122
# (with entropy). A micro-batch's 1-2 micro clips hold 48-96 latent positions: a noisy
# sample for a correlation; at full one clip holds 1,280.
BATCH_STATISTICS = [({}, 5e-3, 0.15), ({"entropy": 0.1, "commitment": 0.25}, 2e-2, 0.2)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("joint")
    config = joint_i3d_config("micro")
    write_micro_i3d(directory / "motion.ckpt")
    _, train_set = gate_inputs(config.study, directory)
    return config, directory, train_set


def experiment_with(inputs, **loss):
    config, directory, train_set = inputs
    config = replace(config, recon_clips=RECON_CLIPS, loss=replace(config.loss, **loss))
    tokenizer, _ = gate_inputs(config.study, directory)  # the same seeded weights every time
    experiment = build_experiment(
        config, backbone=load_motion(config, str(directory / "motion.ckpt")),
        tokenizer=tokenizer, train_set=train_set, train_clips=config.study.train.train_clips,
        probe_set=TrajectoryVideos(config.study.data, split="eval", size=2))
    experiment.trainable.train()
    return experiment


def loss_and_grads(experiment, batch, micro_batch):
    """The batch's loss as the loop adds it up (micro-batch losses times their clip share),
    and the accumulated gradients."""
    experiment.trainable.zero_grad(set_to_none=True)
    total = 0.0
    for clips, micro in split_batch(batch, BATCH, micro_batch):
        loss, _ = experiment.loss(micro)
        (loss * (clips / BATCH)).backward()
        total += clips / BATCH * loss.item()
    grads = {n: p.grad.clone() for n, p in experiment.trainable.named_parameters()
             if p.grad is not None}
    return total, grads


def test_batches_carry_the_reconstruction_weight_per_clip(inputs):
    experiment = experiment_with(inputs)
    batch = next(experiment.train_batches(torch.arange(BATCH), BATCH))
    weight_b = batch["recon_weight"]
    assert weight_b.tolist() == [BATCH / RECON_CLIPS] * RECON_CLIPS + [0.0] * 5
    assert recon_selection(weight_b, BATCH) == ([0, 1, 2], 1.0)
    # Split as the loop splits: each piece keeps its clips' weights and its share.
    pieces = [micro["recon_weight"] for _, micro in split_batch(batch, BATCH, 2)]
    assert [recon_selection(w, 2) for w in pieces] == [
        ([0, 1], BATCH / RECON_CLIPS), ([0], BATCH / RECON_CLIPS / 2), ([], 0.0), ([], 0.0)]
    # A last batch smaller than recon_clips puts all its clips in.
    assert experiment.recon_weights(2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="one positive value"):
        recon_selection(torch.tensor([2.0, 1.0, 0.0]), 3)
    with pytest.raises(ValueError, match="one weight per clip"):
        recon_selection(torch.ones(4), 3)


@pytest.mark.parametrize("micro_batch", [1, 2, 3])
def test_per_clip_terms_add_up_over_micro_batches(inputs, micro_batch):
    experiment = experiment_with(inputs, **PER_CLIP)
    batch = next(experiment.train_batches(torch.arange(BATCH), BATCH))
    whole, whole_grads = loss_and_grads(experiment, batch, BATCH)
    split, split_grads = loss_and_grads(experiment, batch, micro_batch)
    assert split == pytest.approx(whole, rel=1e-6)
    assert split_grads.keys() == whole_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("loss, loss_tolerance, grad_tolerance", BATCH_STATISTICS)
def test_batch_statistics_per_micro_batch_stay_within_the_stated_tolerance(
        inputs, loss, loss_tolerance, grad_tolerance):
    experiment = experiment_with(inputs, **loss)
    batch = next(experiment.train_batches(torch.arange(BATCH), BATCH))
    whole, whole_grads = loss_and_grads(experiment, batch, BATCH)
    split, split_grads = loss_and_grads(experiment, batch, 1)
    assert split != whole  # per micro-batch: the statistics are over fewer latent positions
    assert abs(split - whole) < loss_tolerance
    change = sum((split_grads[n] - g).square().sum() for n, g in whole_grads.items())
    norm = sum(g.square().sum() for g in whole_grads.values())
    assert float((change / norm).sqrt()) < grad_tolerance


def test_a_batch_without_weights_uses_the_first_recon_clips(inputs):
    experiment = experiment_with(inputs)
    batch = next(experiment.train_batches(torch.arange(BATCH), BATCH))
    with torch.no_grad():
        weighted, logs = experiment.loss(batch)
        plain, plain_logs = experiment.loss({"video": batch["video"]})
    assert torch.equal(weighted, plain) and logs == plain_logs
    # A micro-batch with no chosen clip has no reconstruction term and logs none.
    last = {"video": batch["video"][-2:], "recon_weight": batch["recon_weight"][-2:]}
    with torch.no_grad():
        _, logs = experiment.loss(last)
    assert "recon_l1" not in logs and "latent" in logs
