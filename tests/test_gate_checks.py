"""The gates' checks fail on the broken models they are there to catch.

Each variant's gate (``branches/<variant>/tests/test_gate.py``) runs its checks on the real
model; here every check runs on a model broken in the way its gate test's docstring names,
and must raise AssertionError with the message of that check. These are not part of any gate
(a gate must pass): they show that a passing gate means something.

The broken models are the real micro variants with one thing changed: a loader that skips
what it must load, a predictor a block deeper than its config, a frozen part left trainable,
a prediction that reads the true future through a side channel, context latents encoded with
the whole clip, a predictor blind to its context, targets shifted by one latent frame, an
oracle that stays the pretrained tokenizer's.
"""

from __future__ import annotations

import copy
import types
from dataclasses import replace
from functools import partial

import pytest
import torch

import branches.joint_i3d.model as joint_model
import shared.latent_experiment as latent_experiment
from branches.baseline.config import baseline_config
from branches.baseline.tests import checks as baseline
from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.tests import checks as joint
from branches.slowfast_frozen.config import slowfast_frozen_config
from branches.slowfast_frozen.tests import checks as slowfast
from shared.latent_experiment import FrozenTokenizerExperiment, LatentLayout, oracle_future
from shared.magvit import load_tokenizer
from shared.motion.i3d import InceptionI3d, i3d_config
from shared.motion.slowfast import SlowFastR50, model_state_dict
from shared.testing import (
    check_prediction_ignores_future,
    check_prediction_uses_context,
    check_targets_are_future_latents,
    check_tokenizer_checkpoint_round_trip,
    check_training_inputs_ignore_future,
    micro_clips,
    with_other_futures,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANTS = ["baseline", "joint-i3d", "slowfast-frozen"]
CONFIGS = {"baseline": baseline_config, "joint-i3d": joint_i3d_config,
           "slowfast-frozen": slowfast_frozen_config}
# The module whose helpers build the variant's training latents (where a bug would sit).
LATENT_HELPERS = {"baseline": latent_experiment, "joint-i3d": joint_model,
                  "slowfast-frozen": latent_experiment}


def build(variant: str, directory, config=None):
    """The real micro experiment of ``variant`` (optionally from another config)."""
    if variant == "joint-i3d":
        return joint.make_experiment(directory, config=config)[1]
    return {"baseline": baseline, "slowfast-frozen": slowfast}[variant].micro_experiment(
        directory, config)


def batch_of(variant: str, experiment):
    """Whole clips -> a training batch, as the variant's gate makes one."""
    if variant == "joint-i3d":
        return lambda video: {"video": video}
    return experiment.frozen_targets


def check_parameter_counts_match_config(variant: str, experiment, config) -> None:
    {"baseline": baseline, "joint-i3d": joint, "slowfast-frozen": slowfast}[
        variant].check_parameter_counts_match_config(experiment, config)


@pytest.fixture(scope="module")
def layout():
    data = baseline_config("micro").study.data
    return LatentLayout(data.frames, data.context_frames)


# -- test_tokenizer_..._load_... ---------------------------------------------------------------


def test_tokenizer_check_catches_a_loader_that_takes_the_raw_weights(tmp_path):
    with pytest.raises(AssertionError, match="is not the EMA weight"):
        check_tokenizer_checkpoint_round_trip(
            tmp_path, load=partial(load_tokenizer, prefer_ema=False))


def test_i3d_load_check_catches_a_loader_that_skips_batchnorm_statistics(tmp_path):
    def load_weights_only(config, source):
        model = InceptionI3d(i3d_config(config.motion.i3d))
        parameters = dict(model.named_parameters())
        state = torch.load(source, weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if k in parameters}, strict=False)
        return model.eval()

    with pytest.raises(AssertionError, match="running_"):
        joint.check_i3d_checkpoint_loads(tmp_path, load=load_weights_only)


def test_slowfast_load_check_catches_a_loader_that_skips_batchnorm_statistics(tmp_path):
    def load_weights_only(source, *, config):
        model = SlowFastR50(config)
        parameters = dict(model.named_parameters())
        state = model_state_dict(torch.load(source, weights_only=True), str(source))
        model.load_state_dict({k: v for k, v in state.items() if k in parameters}, strict=False)
        return model.eval()

    with pytest.raises(AssertionError, match="running_"):
        slowfast.check_slowfast_checkpoint_loads(slowfast.write_micro_slowfast(tmp_path),
                                                 load=load_weights_only)


# -- test_parameter_counts_match_config ----------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_check_catches_a_predictor_a_block_deeper_than_its_config(variant, tmp_path):
    config = CONFIGS[variant]("micro")
    predictor = config.study.predictor
    deeper = replace(config, study=replace(config.study,
                                           predictor=replace(predictor, depth=predictor.depth + 1)))
    experiment = build(variant, tmp_path, deeper)
    with pytest.raises(AssertionError, match="parameter counts"):
        check_parameter_counts_match_config(variant, experiment, config)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_check_catches_a_frozen_part_left_trainable(variant, tmp_path):
    experiment = build(variant, tmp_path)
    frozen = {"baseline": lambda: experiment.tokenizer,
              "joint-i3d": lambda: experiment.motion,
              "slowfast-frozen": lambda: experiment.condition.features.backbone}[variant]()
    frozen.requires_grad_(True)
    with pytest.raises(AssertionError, match="parameter counts"):
        check_parameter_counts_match_config(variant, experiment, CONFIGS[variant]("micro"))


# -- test_forward_shape_finite_and_no_leakage ------------------------------------------------


class ReadsPastItsContext:
    """Predicts like ``inner``, plus a trace of the true future read through the storage its
    context is a view of: a model that slices past the frames it was given."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def oracle(self, context, future):
        return self.inner.oracle(context, future)

    def predict(self, context, future_frames):
        prediction = self.inner.predict(context, future_frames)
        whole = context._base  # the clip the context was sliced from
        return (prediction + 1e-3 * whole[:, :, -future_frames:]).clamp(-1, 1)


class RemembersTheFuture(ReadsPastItsContext):
    """Predicts like ``inner``, plus a trace of the last future it was shown (by ``oracle``): a
    model that keeps state from a call that saw the future."""

    future = None

    def oracle(self, context, future):
        self.future = future
        return self.inner.oracle(context, future)

    def predict(self, context, future_frames):
        prediction = self.inner.predict(context, future_frames)
        return (prediction + 1e-3 * self.future).clamp(-1, 1)


@pytest.mark.parametrize("side_channel", [ReadsPastItsContext, RemembersTheFuture])
@pytest.mark.parametrize("variant", VARIANTS)
def test_leakage_check_catches_a_model_that_sees_the_future(variant, side_channel, layout,
                                                            tmp_path):
    peeking = side_channel(build(variant, tmp_path))
    with pytest.raises(AssertionError, match="the prediction changed with the true future"):
        check_prediction_ignores_future(peeking, layout, micro_clips(3))


def test_leakage_check_refuses_a_future_that_does_not_change(layout, tmp_path):
    # Three copies of one clip: swapping their futures changes nothing, so a pass would mean
    # nothing; the check's sanity step says so instead of passing.
    same = micro_clips(1).expand(3, -1, -1, -1, -1).contiguous()
    with pytest.raises(AssertionError, match="left its oracle as it was"):
        check_prediction_ignores_future(build("baseline", tmp_path), layout, same)


def encode_context_with_the_whole_clip(tokenizer, context_bcthw):
    """Context codes cut from one encoding of the whole clip that ``context_bcthw`` is a view
    of: one encoder pass instead of two, and GroupNorm lets the future into them."""
    whole = context_bcthw._base if context_bcthw._base is not None else context_bcthw
    return tokenizer.encode(whole)[0][:, :, : 1 + (context_bcthw.shape[2] - 1) // 4]


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_leak_check_catches_context_latents_of_the_whole_clip(variant, layout,
                                                                       tmp_path, monkeypatch):
    experiment = build(variant, tmp_path)
    monkeypatch.setattr(LATENT_HELPERS[variant], "encode_context",
                        encode_context_with_the_whole_clip)
    clips = micro_clips(3)
    altered = with_other_futures(clips, layout.context_frames)
    with pytest.raises(AssertionError, match="training inputs moved with the future"):
        check_training_inputs_ignore_future(experiment, clips, altered,
                                            batch_of(variant, experiment))


# -- test_prediction_uses_its_context --------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_context_check_catches_a_predictor_that_ignores_its_context(variant, layout, tmp_path):
    experiment = build(variant, tmp_path)
    forward = experiment.predictor.forward

    def blind(context_codes, future_grid, condition=None):
        return forward(torch.zeros_like(context_codes), future_grid, condition)

    experiment.predictor.forward = blind
    # Without a condition the logits are the same for every context; with one (joint-i3d,
    # slowfast-frozen) they move with the features, and the gradient check catches it.
    message = ("did not change when its context did" if variant == "baseline"
               else "do not depend on the context codes")
    with pytest.raises(AssertionError, match=message):
        check_prediction_uses_context(experiment, layout, micro_clips(3))


# -- test_targets_are_the_future_latents -------------------------------------------------------


def encode_future_target_one_frame_early(tokenizer, video_bcthw, layout):
    """The off-by-one: the future's latents start at the last context latent frame."""
    codes = tokenizer.encode(video_bcthw)[0]
    start = layout.context_latent_frames - 1
    return codes[:, :, start : codes.shape[2] - 1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_target_check_catches_targets_shifted_by_one_latent_frame(variant, layout, tmp_path,
                                                                   monkeypatch):
    experiment = build(variant, tmp_path)
    monkeypatch.setattr(LATENT_HELPERS[variant], "encode_future_target",
                        encode_future_target_one_frame_early)
    with pytest.raises(AssertionError, match="the targets are other latent frames"):
        check_targets_are_future_latents(experiment, layout, micro_clips(3),
                                         batch_of(variant, experiment))


# -- test_training_step_updates_only_trainable_and_loss_falls ----------------------------------


def encode_with_gradients(experiment, method: str) -> None:
    """``experiment.<method>`` (a frozen computation) run without its ``no_grad``."""
    unwrapped = getattr(FrozenTokenizerExperiment, method).__wrapped__
    setattr(experiment, method, types.MethodType(unwrapped, experiment))


def test_training_check_catches_gradients_reaching_the_frozen_tokenizer(tmp_path):
    experiment = build("baseline", tmp_path)
    experiment.tokenizer.requires_grad_(True)
    encode_with_gradients(experiment, "frozen_latents")
    with pytest.raises(AssertionError, match="tokenizer got a gradient"):
        baseline.check_training(experiment)


def test_training_check_catches_gradients_reaching_the_frozen_slowfast(tmp_path):
    experiment = build("slowfast-frozen", tmp_path)
    experiment.condition.features.backbone.requires_grad_(True)
    encode_with_gradients(experiment, "frozen_condition")
    with pytest.raises(AssertionError, match="slowfast got a gradient"):
        slowfast.check_training(experiment)


def test_joint_training_check_catches_gradients_reaching_the_frozen_i3d(tmp_path):
    experiment = build("joint-i3d", tmp_path)
    experiment.motion.frozen = False  # its features are computed with gradients
    experiment.motion.requires_grad_(True)
    with pytest.raises(AssertionError, match="i3d got a gradient"):
        joint.check_joint_training(experiment)


def test_joint_training_check_catches_a_tokenizer_frozen_by_mistake(tmp_path):
    experiment = build("joint-i3d", tmp_path)
    experiment.tokenizer.requires_grad_(False)
    with pytest.raises(AssertionError, match="no gradient reaches the tokenizer's encoder"):
        joint.check_joint_training(experiment)


def test_joint_training_check_catches_an_oracle_of_the_pretrained_tokenizer(tmp_path):
    experiment = build("joint-i3d", tmp_path)
    pretrained = copy.deepcopy(experiment.tokenizer).eval()
    experiment.oracle = torch.no_grad()(partial(oracle_future, pretrained))
    with pytest.raises(AssertionError, match="the oracle did not move with the tokenizer"):
        joint.check_joint_training(experiment)


# -- the variants' own tests ---------------------------------------------------------------


def test_i3d_check_catches_a_frozen_i3d_in_train_mode(tmp_path):
    # Its BatchNorm would learn the statistics of every training batch.
    experiment = build("joint-i3d", tmp_path)
    experiment.motion.frozen = False  # .train() no longer keeps it in eval mode
    experiment.motion.train()
    with pytest.raises(AssertionError, match="frozen I3D is in train mode"):
        joint.check_i3d_frozen_or_trainable(experiment, trainable=False)


def test_i3d_check_catches_a_trainable_i3d_left_frozen(tmp_path):
    _, experiment = joint.make_experiment(tmp_path, motion_trainable=True)
    experiment.motion.freeze()
    with pytest.raises(AssertionError, match="trainable I3D is in eval mode"):
        joint.check_i3d_frozen_or_trainable(experiment, trainable=True)


def test_slowfast_check_catches_batchnorm_put_in_train_mode(tmp_path):
    experiment = build("slowfast-frozen", tmp_path)
    experiment.condition.features.frozen = False  # a parent's .train() reaches BatchNorm
    with pytest.raises(AssertionError, match="SlowFast went into train mode"):
        slowfast.check_slowfast_stays_frozen(experiment)


def test_features_check_catches_a_predictor_that_ignores_its_features(layout, tmp_path):
    experiment = build("slowfast-frozen", tmp_path)
    forward = experiment.predictor.forward

    def without_features(context_codes, future_grid, condition=None):
        return forward(context_codes, future_grid, None)

    experiment.predictor.forward = without_features
    with pytest.raises(AssertionError, match="the features do not reach the logits"):
        slowfast.check_features_reach_the_prediction(experiment, layout)
