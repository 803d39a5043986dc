"""The slowfast-frozen gate's builders and own checks. The gate (test_gate.py) runs each check
on the real variant; tests/test_gate_checks.py runs it on a broken model and sees it fail."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from branches.slowfast_frozen.config import SlowFastFrozenConfig, slowfast_frozen_config
from branches.slowfast_frozen.model import SlowFastCondition, build_experiment
from branches.slowfast_frozen.train import load_condition
from shared.data import TRAJECTORY_CLASSES
from shared.latent_experiment import FrozenTokenizerExperiment, LatentLayout
from shared.motion.pretrain import save_motion_checkpoint
from shared.motion.slowfast import SlowFastR50, load_slowfast, slowfast_config
from shared.testing import (
    check_parameter_counts,
    check_training_steps,
    expected_predictor_parameters,
    gate_inputs,
    micro_clips,
    micro_tokenizer,
    randomise_batchnorm_statistics,
)


def micro_slowfast(seed: int = 0) -> SlowFastR50:
    """A micro SlowFast with seeded random weights and BN statistics (so a BN update shows)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SlowFastR50(slowfast_config("micro", num_classes=len(TRAJECTORY_CLASSES)))
        randomise_batchnorm_statistics(model)
    return model.eval()


def write_micro_slowfast(directory: Path) -> Path:
    """``micro_slowfast()`` saved as ``shared.motion.pretrain`` saves a backbone."""
    return save_motion_checkpoint(micro_slowfast(), directory / "motion", preset="micro")


def micro_experiment(directory: Path, config: SlowFastFrozenConfig | None = None
                     ) -> FrozenTokenizerExperiment:
    """The variant built as its entry point builds it, from micro tokenizer and SlowFast
    checkpoints written to ``directory``, without caches."""
    config = config or slowfast_frozen_config("micro")
    motion_path = write_micro_slowfast(directory)
    tokenizer, train_set = gate_inputs(config.study, directory)
    condition = load_condition(config, str(motion_path))
    return build_experiment(config, condition=condition, tokenizer=tokenizer,
                            train_set=train_set, train_clips=config.study.train.train_clips,
                            cache=None)


def slowfast_of(experiment: FrozenTokenizerExperiment) -> SlowFastCondition:
    assert isinstance(experiment.condition, SlowFastCondition)
    return experiment.condition


def check_slowfast_checkpoint_loads(motion_path: Path,
                                    load: Callable[..., SlowFastR50] = load_slowfast) -> None:
    """The motion file is in pytorchvideo's layout, and ``load`` (the public loader) takes it
    with every weight and BatchNorm statistic."""
    assert "model_state" in torch.load(motion_path, weights_only=True)
    reference = micro_slowfast()
    public = load(motion_path, config=copy.deepcopy(reference.config))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(public.state_dict()[name], tensor), f"SlowFast {name} did not load"


def check_parameter_counts_match_config(experiment: FrozenTokenizerExperiment,
                                        config: SlowFastFrozenConfig) -> None:
    """The predictor (sized for SlowFast's features) trains; tokenizer and SlowFast are
    frozen; the counts are worked out from the configs."""
    feature_dim = slowfast_config("micro").feature_dim
    expected = {
        "trainable": expected_predictor_parameters(
            replace(config.study.predictor, condition_dim=feature_dim)),
        "frozen": sum(t.numel() for t in micro_tokenizer().parameters())
        + sum(t.numel() for t in micro_slowfast().parameters()),
    }
    check_parameter_counts(
        experiment, expected,
        frozen={"tokenizer": experiment.tokenizer, "SlowFast": slowfast_of(experiment).features},
        trainable={"predictor": experiment.predictor})


def check_training(experiment: FrozenTokenizerExperiment) -> None:
    """25 Adam steps on one batch of 8 clips: ``check_training_steps`` with the tokenizer and
    SlowFast frozen."""
    batch = next(experiment.train_batches(torch.arange(8), 8))
    optimizer = torch.optim.Adam(experiment.trainable.parameters(), lr=3e-3)
    check_training_steps(experiment, batch, optimizer, steps=25, frozen={
        "tokenizer": experiment.tokenizer, "slowfast": slowfast_of(experiment).module})


def check_slowfast_stays_frozen(experiment: FrozenTokenizerExperiment) -> None:
    """A parent calling ``.train()`` (as a training loop does) leaves SlowFast's BatchNorm in
    eval mode, and a training step that computes the features on the fly (no cache) leaves
    every buffer as it was and gives SlowFast no gradient."""
    slowfast = slowfast_of(experiment).features
    buffers_before = {n: b.clone() for n, b in slowfast.named_buffers()}
    slowfast.train()
    experiment.trainable.train()
    assert all(not m.training for m in slowfast.backbone.modules()), \
        "SlowFast went into train mode with its parent"
    batch = next(experiment.train_batches(torch.arange(4), 4))
    loss, _ = experiment.loss(batch)
    loss.backward()
    for name, buffer in slowfast.named_buffers():
        assert torch.equal(buffer, buffers_before[name]), f"SlowFast buffer {name} changed"
    assert all(t.grad is None for t in slowfast.parameters()), "SlowFast got a gradient"


def check_features_reach_the_prediction(experiment: FrozenTokenizerExperiment,
                                        layout: LatentLayout) -> None:
    """Each clip's logits depend on its own SlowFast features and on no other clip's (the
    gradient says it exactly: at initialisation the features move a logit by about 1e-6,
    reaching the future tokens through attention alone, too little for a tolerance check);
    and end to end, another backbone (other weights) gives other features, other logits and
    another cache key."""
    clip = micro_clips(4)
    targets = experiment.frozen_targets(clip)
    grid = tuple(targets["future_codes"].shape[2:])
    experiment.predictor.eval()
    condition = targets["condition"].clone().requires_grad_(True)
    logits = experiment.predictor(targets["context_codes"], grid, condition)
    logits[0].sum().backward()
    assert condition.grad is not None, "the features do not reach the logits"
    grad_per_clip = condition.grad.flatten(1).abs().sum(1)
    assert grad_per_clip[0] > 0, "the features do not reach the logits"
    assert torch.all(grad_per_clip[1:] == 0), "clip 0's logits depend on other clips' features"
    logits = logits.detach()
    other = SlowFastCondition(micro_slowfast(seed=1), time_resolved=False)
    context = clip[:, :, : layout.context_frames]
    with torch.no_grad():
        other_condition = other(context)
        assert not torch.allclose(other_condition, targets["condition"])
        assert not torch.equal(
            experiment.predictor(targets["context_codes"], grid, other_condition), logits)
    assert other.cache_key != slowfast_of(experiment).cache_key
