"""The joint-i3d gate's builders and own checks. The gate (test_gate.py) runs each check on
the real variant; tests/test_gate_checks.py runs it on a broken model and sees it fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from branches.joint_i3d.config import JointI3DConfig, joint_i3d_config
from branches.joint_i3d.model import JointI3DExperiment, build_experiment
from branches.joint_i3d.train import load_motion
from shared.data import TrajectoryVideos
from shared.motion.i3d import InceptionI3d, i3d_config
from shared.testing import (
    check_parameter_counts,
    check_training_steps,
    expected_predictor_parameters,
    gate_inputs,
    micro_tokenizer,
    randomise_batchnorm_statistics,
)


def write_micro_i3d(path: Path, seed: int = 0) -> InceptionI3d:
    """A micro I3D in the public layout (bare state dict, no config beside it), with BN
    statistics that are not the defaults, so a loader that skips buffers is caught."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = InceptionI3d(i3d_config("micro"))
        randomise_batchnorm_statistics(model)
    torch.save(model.state_dict(), path)
    return model


def make_experiment(directory: Path, *, motion_trainable: bool = False,
                    config: JointI3DConfig | None = None
                    ) -> tuple[JointI3DConfig, JointI3DExperiment]:
    """(config, experiment) built as the entry point builds them, from micro tokenizer and I3D
    checkpoints written to ``directory``; ``motion_trainable`` overrides the config's."""
    config = config or joint_i3d_config("micro")
    config = replace(config, motion=replace(config.motion, trainable=motion_trainable))
    study = config.study
    write_micro_i3d(directory / "motion.ckpt")
    tokenizer, train_set = gate_inputs(study, directory)
    probe_set = TrajectoryVideos(study.data, split="eval", size=4)
    backbone = load_motion(config, str(directory / "motion.ckpt"))
    experiment = build_experiment(config, backbone=backbone, tokenizer=tokenizer,
                                  train_set=train_set, train_clips=study.train.train_clips,
                                  cache=None, probe_set=probe_set)
    return config, experiment


def optimizer_for(experiment: JointI3DExperiment, lr: float = 3e-3) -> torch.optim.Optimizer:
    # What shared.training does with param_groups(): lr_scale multiplies the base rate.
    groups = [dict(g) for g in experiment.param_groups()]
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale", 1.0)
    return torch.optim.Adam(groups, lr=lr)


def check_i3d_checkpoint_loads(directory: Path, load: Callable[..., InceptionI3d] = load_motion
                               ) -> None:
    """The I3D file is a bare state dict (piergiaj layout) with no config beside it: ``load``
    (the entry point's loader) rebuilds it from the preset's I3D config, every weight and BN
    statistic loads, and it comes back in eval mode."""
    written = write_micro_i3d(directory / "motion.ckpt", seed=5)
    assert all(isinstance(v, torch.Tensor) for v in torch.load(directory / "motion.ckpt").values())
    i3d = load(joint_i3d_config("micro"), str(directory / "motion.ckpt"))
    for name, tensor in written.state_dict().items():
        assert torch.equal(i3d.state_dict()[name], tensor), f"I3D {name} did not load"
    assert not i3d.training


def check_parameter_counts_match_config(experiment: JointI3DExperiment,
                                        config: JointI3DConfig) -> None:
    """Tokenizer, predictor and fusion train; I3D's feature path trains only when the config
    says so (its classifier head never: it is off the feature path); the counts are worked out
    from the configs; the tokenizer's optimizer group has the tokenizer's learning-rate scale."""
    p = replace(config.study.predictor, condition_dim=i3d_config(config.motion.i3d).feature_dim)
    predictor = expected_predictor_parameters(p)
    fusion = 2 * p.condition_dim  # LayerNorm over the I3D features
    tokenizer = sum(t.numel() for t in micro_tokenizer().parameters())
    i3d_model = InceptionI3d(i3d_config(config.motion.i3d))
    i3d = sum(t.numel() for t in i3d_model.parameters())
    head = sum(t.numel() for t in i3d_model.logits.parameters())  # not on the feature path
    motion = experiment.motion
    feature_path = [t for n, t in motion.named_parameters() if not n.startswith("backbone.logits.")]
    trainable = {"tokenizer": experiment.tokenizer, "predictor": experiment.predictor,
                 "fusion": experiment.fusion}
    if config.motion.trainable:
        expected = {"trainable": tokenizer + predictor + fusion + i3d - head, "frozen": head}
        check_parameter_counts(experiment, expected,
                               frozen={"I3D head": motion.backbone.logits},
                               trainable=trainable | {"I3D feature path": feature_path})
    else:
        expected = {"trainable": tokenizer + predictor + fusion, "frozen": i3d}
        check_parameter_counts(experiment, expected, frozen={"I3D": motion}, trainable=trainable)
    scales = {g.get("lr_scale", 1.0) for g in experiment.param_groups()}
    assert config.tokenizer_lr_scale in scales, "the tokenizer lost its learning-rate scale"


def check_joint_training(experiment: JointI3DExperiment, steps: int = 20) -> None:
    """``check_training_steps`` on one batch of 4 clips, with the I3D frozen (as configured
    by default); plus: gradients reach the tokenizer's encoder and decoder, both halves of
    the loss fall (the prediction on targets that move with the tokenizer, and the
    reconstruction), and the oracle and drift figures follow the CURRENT tokenizer."""
    batch = next(experiment.train_batches(torch.arange(4), 4))
    c = experiment.layout.context_frames
    context, future = batch["video"][:, :, :c], batch["video"][:, :, c:]
    oracle_before = experiment.oracle(context, future)
    assert experiment.epoch_metrics()["code_bits_changed"] == 0

    def end_to_end(logs: dict[str, float]) -> None:
        assert any(m is experiment.tokenizer for m in experiment.trainable.modules())
        for part in ("encoder", "decoder"):
            parameters = list(getattr(experiment.tokenizer, part).parameters())
            assert all(p.grad is not None for p in parameters), \
                f"no gradient reaches the tokenizer's {part}"
        assert {"latent", "bit_accuracy", "recon_l1", "recon_psnr"} <= set(logs)

    experiment.trainable.train()  # what the loop does each epoch
    history = check_training_steps(experiment, batch, optimizer_for(experiment), steps=steps,
                                   frozen={"i3d": experiment.motion}, first_step_check=end_to_end)
    # Both halves learn, not only the entropy term (which can go negative on its own).
    first, last = history[0], history[-1]
    assert last["latent"] < 0.95 * first["latent"], history
    assert last["recon_l1"] < 0.8 * first["recon_l1"], history
    # The oracle row is the CURRENT tokenizer's round trip, and the drift is measured.
    assert not torch.equal(oracle_before, experiment.oracle(context, future)), \
        "the oracle did not move with the tokenizer"
    drift = experiment.epoch_metrics()
    assert 0 < drift["code_bits_changed"] < 1 and 0 < drift["tokenizer_psnr"] < 100, drift


def check_i3d_frozen_or_trainable(experiment: JointI3DExperiment, trainable: bool) -> None:
    """One training step (the loop's ``.train()``, then Adam): a trainable I3D is in train
    mode, inside ``trainable``, takes gradients on its whole feature path, moves, and learns
    its BatchNorm statistics; a frozen one stays in eval mode and outside ``trainable``, takes
    no gradient, and keeps every weight and statistic."""
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
    if trainable:
        assert motion.training and motion in experiment.trainable.modules(), \
            "the trainable I3D is in eval mode or outside the trainable modules"
        feature_path = {n: p for n, p in motion.named_parameters()
                        if not n.startswith("backbone.logits.")}
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in feature_path.values()), "no gradient reaches the trainable I3D"
        assert changed == bn_stats, "the trainable I3D's BatchNorm statistics did not all move"
        assert all(not torch.equal(p, weights_before[n]) for n, p in feature_path.items()), \
            "the trainable I3D's weights did not all move"
    else:
        assert not motion.training and motion not in experiment.trainable.modules(), \
            "the frozen I3D is in train mode or inside the trainable modules"
        assert all(p.grad is None for p in motion.parameters()), "the frozen I3D got gradients"
        assert not changed, f"the frozen I3D's BatchNorm statistics moved: {changed}"
        assert all(torch.equal(p, weights_before[n]) for n, p in motion.named_parameters())
