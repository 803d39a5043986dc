"""The joint-i3d gate (micro preset, CPU, seconds): the four tests of the contract, plus the
I3D backbone's frozen / trainable behaviour."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.model import build_experiment
from branches.joint_i3d.train import load_motion
from shared.data import TrajectoryVideos
from shared.latent_experiment import LatentLayout, encode_future_target
from shared.motion.i3d import InceptionI3d, i3d_config
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


def write_micro_i3d(path, seed: int = 0):
    """A micro I3D in the public layout (bare state dict, no config beside it), with BN
    statistics that are not the defaults, so a loader that skips buffers is caught."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = InceptionI3d(i3d_config("micro"))
        randomise_batchnorm_statistics(model)
    torch.save(model.state_dict(), path)
    return model


def make_experiment(tmp_path, *, motion_trainable: bool = False):
    config = joint_i3d_config("micro")
    config = replace(config, motion=replace(config.motion, trainable=motion_trainable))
    study = config.study
    write_micro_i3d(tmp_path / "motion.ckpt")
    tokenizer, train_set = gate_inputs(study, tmp_path)
    probe_set = TrajectoryVideos(study.data, split="eval", size=4)
    backbone = load_motion(config, str(tmp_path / "motion.ckpt"))
    experiment = build_experiment(config, backbone=backbone, tokenizer=tokenizer,
                                  train_set=train_set, train_clips=study.train.train_clips,
                                  cache=None, probe_set=probe_set)
    return config, experiment


def optimizer_for(experiment, lr: float = 3e-3) -> torch.optim.Optimizer:
    # What shared.training does with param_groups(): lr_scale multiplies the base rate.
    groups = [dict(g) for g in experiment.param_groups()]
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0)
    return torch.optim.Adam(groups, lr=lr)


@pytest.fixture()
def setup(tmp_path):
    return make_experiment(tmp_path)


def test_tokenizer_and_i3d_load_official_layouts(tmp_path):
    check_tokenizer_checkpoint_round_trip(tmp_path)

    # The I3D file is a bare state dict (piergiaj layout) with no config beside it: the
    # preset's I3D config rebuilds it, and every weight and BN statistic loads.
    i3d_written = write_micro_i3d(tmp_path / "motion.ckpt", seed=5)
    assert all(isinstance(v, torch.Tensor) for v in torch.load(tmp_path / "motion.ckpt").values())
    i3d = load_motion(joint_i3d_config("micro"), str(tmp_path / "motion.ckpt"))
    for name, tensor in i3d_written.state_dict().items():
        assert torch.equal(i3d.state_dict()[name], tensor), name
    assert not i3d.training


@pytest.mark.parametrize("motion_trainable", [False, True])
def test_parameter_counts_match_config(tmp_path, motion_trainable):
    config, experiment = make_experiment(tmp_path, motion_trainable=motion_trainable)
    p = replace(config.study.predictor, condition_dim=i3d_config("micro").feature_dim)
    predictor = expected_predictor_parameters(p)
    fusion = 2 * p.condition_dim  # LayerNorm over the I3D features
    tokenizer = sum(t.numel() for t in micro_tokenizer().parameters())
    i3d_model = InceptionI3d(i3d_config("micro"))
    i3d = sum(t.numel() for t in i3d_model.parameters())
    head = sum(t.numel() for t in i3d_model.logits.parameters())  # not on the feature path
    expected = ({"trainable": tokenizer + predictor + fusion + i3d - head, "frozen": head}
                if motion_trainable else
                {"trainable": tokenizer + predictor + fusion, "frozen": i3d})
    assert experiment.parameter_counts() == expected
    on_feature_path = [p for n, p in experiment.motion.named_parameters()
                       if not n.startswith("backbone.logits.")]
    assert all(p.requires_grad == motion_trainable for p in on_feature_path)
    assert not any(p.requires_grad for p in experiment.motion.backbone.logits.parameters())
    # The optimizer groups cover exactly the trainable parameters, each once.
    grouped = [id(p) for g in experiment.param_groups() for p in g["params"]]
    assert sorted(grouped) == sorted(
        id(p) for p in experiment.trainable.parameters() if p.requires_grad)
    scales = {g.get("lr_scale", 1.0) for g in experiment.param_groups()}
    assert config.tokenizer_lr_scale in scales


def test_forward_shape_finite_and_no_leakage(setup):
    config, experiment = setup
    layout = LatentLayout(config.study.data.frames, config.study.data.context_frames)
    clip = micro_clips(3)
    altered = check_prediction_ignores_future(experiment, layout, clip)
    # In the training loss, the predictor's inputs (context codes and motion tokens) do not
    # move with the future while its targets do: capture them with a hook.
    seen = []
    hook = experiment.predictor.register_forward_hook(
        lambda module, inputs, output: seen.append([x.detach() for x in (inputs[0], inputs[2])]))
    with torch.no_grad():
        experiment.loss({"video": clip})
        experiment.loss({"video": altered})
    hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(seen[0], seen[1], strict=True))
    # The targets are the whole clip's future codes, which do move with the future.
    with torch.no_grad():
        assert not torch.equal(encode_future_target(experiment.tokenizer, clip, layout),
                               encode_future_target(experiment.tokenizer, altered, layout))


def test_training_step_updates_only_trainable_and_loss_falls(setup):
    _, experiment = setup
    batch = next(experiment.train_batches(torch.arange(4), 4))
    oracle_before = experiment.oracle(batch["video"][:, :, :5], batch["video"][:, :, 5:])
    assert experiment.epoch_metrics()["code_bits_changed"] == 0
    trainable_names = [n for n, _ in experiment.trainable.named_parameters()]

    def end_to_end(logs):
        # The tokenizer's encoder and decoder both take gradients.
        assert any(n.startswith("tokenizer.encoder.") for n in trainable_names)
        assert any(n.startswith("tokenizer.decoder.") for n in trainable_names)
        assert {"latent", "bit_accuracy", "recon_l1", "recon_psnr"} <= set(logs)

    experiment.trainable.train()  # what the loop does each epoch
    history = check_training_steps(experiment, batch, optimizer_for(experiment), steps=20,
                                   frozen={"i3d": experiment.motion}, first_step_check=end_to_end)
    # Both halves learn, not only the entropy term (which can go negative on its own): the
    # prediction loss (on targets that move with the tokenizer) and the reconstruction.
    first, last = history[0], history[-1]
    assert last["latent"] < 0.95 * first["latent"], history
    assert last["recon_l1"] < 0.8 * first["recon_l1"], history
    # The oracle row is the CURRENT tokenizer's round trip, and the drift is measured.
    oracle_after = experiment.oracle(batch["video"][:, :, :5], batch["video"][:, :, 5:])
    assert not torch.equal(oracle_before, oracle_after)
    drift = experiment.epoch_metrics()
    assert 0 < drift["code_bits_changed"] < 1 and 0 < drift["tokenizer_psnr"] < 100


@pytest.mark.parametrize("motion_trainable", [False, True])
def test_i3d_frozen_or_trainable_as_configured(tmp_path, motion_trainable):
    _, experiment = make_experiment(tmp_path, motion_trainable=motion_trainable)
    batch = next(experiment.train_batches(torch.arange(4), 4))
    motion = experiment.motion
    buffers_before = {n: b.clone() for n, b in motion.named_buffers()}
    weights_before = {n: p.detach().clone() for n, p in motion.named_parameters()}
    optimizer = optimizer_for(experiment)
    experiment.trainable.train()
    optimizer.zero_grad()
    experiment.loss(batch)[0].backward()
    optimizer.step()

    bn_stats = [n for n in buffers_before if "running_" in n]
    buffers_after = dict(motion.named_buffers())
    changed = [n for n in bn_stats if not torch.equal(buffers_before[n], buffers_after[n])]
    grads = [p.grad for p in motion.parameters()]
    if motion_trainable:
        assert motion.training and motion in experiment.trainable.modules()
        feature_path = {n: p for n, p in motion.named_parameters()
                        if not n.startswith("backbone.logits.")}
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in feature_path.values())
        assert changed == bn_stats  # BatchNorm learns the statistics of the clips
        assert all(not torch.equal(p, weights_before[n]) for n, p in feature_path.items())
    else:
        assert not motion.training and motion not in experiment.trainable.modules()
        assert all(g is None for g in grads) and not changed
        assert all(torch.equal(p, weights_before[n]) for n, p in motion.named_parameters())
