"""Builders for tests and gates: the ``micro`` preset, real modules, tiny sizes.

Every test and every variant's gate uses these, so they all exercise the same small config.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data import TrajectoryVideos, stack_videos
from shared.magvit import MagvitTokenizer, load_tokenizer, save_tokenizer, tokenizer_config
from shared.predictor import PredictorConfig
from shared.presets import StudyConfig, study_preset
from shared.runtime import eval_mode


def micro_study() -> StudyConfig:
    return study_preset("micro")


def micro_tokenizer(seed: int = 0) -> MagvitTokenizer:
    """A micro tokenizer with seeded random weights (the gates test plumbing, not quality)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MagvitTokenizer(tokenizer_config("micro")).eval()


def write_micro_tokenizer(path: Path, seed: int = 0) -> Path:
    """A micro tokenizer checkpoint in the official Open-MAGVIT2 layout.

    Like the official file it holds raw weights and EMA weights (``model_ema.*``); the EMA
    ones are ``micro_tokenizer(seed)``, the raw ones differ, so a loader that ignores the EMA
    weights is caught.
    """
    ema = micro_tokenizer(seed).state_dict()
    return save_tokenizer(micro_tokenizer(seed + 1), path, ema_state=ema)


def randomise_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm running means ~ N(0, 0.1) and variances ~ U(0.5, 1.5), drawn from the global
    RNG: statistics that are not the defaults, so a loader that skips buffers is caught."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model


def gate_inputs(study: StudyConfig, directory: Path) -> tuple[MagvitTokenizer, TrajectoryVideos]:
    """What every gate builds its experiment from, with the global RNG seeded to 0 first: the
    tokenizer loaded from a micro checkpoint in the official layout (written to
    ``directory``) and the study's training clips."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer(write_micro_tokenizer(directory / "tokenizer.ckpt"))
    return tokenizer, TrajectoryVideos(study.data, split="train", size=study.train.train_clips)


def micro_clips(count: int, *, split: str = "eval") -> torch.Tensor:
    """(count, 3, T, H, W) trajectory clips of the micro preset in [-1, 1]."""
    videos = TrajectoryVideos(micro_study().data, split=split, size=count)
    return stack_videos(videos, range(count))


def expected_predictor_parameters(config: PredictorConfig) -> int:
    """The predictor's parameter count worked out from its config alone (not by building it),
    so a gate can check that the model is the one the config describes."""
    width, token = config.width, config.code_dim * config.patch**2
    hidden = int(config.mlp_ratio * width)
    per_block = (
        2 * 2 * width  # two LayerNorms
        + width * 3 * width + 3 * width  # qkv
        + width * width + width  # attention output projection
        + width * hidden + hidden + hidden * width + width  # MLP
    )
    condition = config.condition_dim * width + width + width if config.condition_dim else 0
    return (
        token * width + width  # code_in
        + width  # mask token
        + condition  # condition_in + condition token
        + config.depth * per_block
        + 2 * width  # norm_out
        + width * token + token  # head
        + (config.code_dim if config.copy_prior else 0)  # copy-prior gain per bit
    )


def check_tokenizer_checkpoint_round_trip(
    directory: Path, load: Callable[[Path], MagvitTokenizer] = load_tokenizer
) -> MagvitTokenizer:
    """Gate check 1: a micro checkpoint in the official layout (raw + ``model_ema.*``) loads
    strictly through ``load``, with the EMA weights, and reconstructs a clip to its own shape.
    Returns the loaded tokenizer for further checks.

    Catches: a loader that takes the raw weights instead of the EMA ones (the official file
    holds both, and only the EMA ones are the released model), or a tokenizer whose latent
    grid or reconstruction is not the shape its config says.
    """
    written = micro_tokenizer(seed=3)
    path = write_micro_tokenizer(directory / "tokenizer.ckpt", seed=3)
    payload = torch.load(path, weights_only=True)
    assert any(k.startswith("model_ema.") for k in payload["state_dict"]), "not official layout"
    loaded = load(path)
    for name, tensor in written.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), f"{name} is not the EMA weight"
    clip = micro_clips(2)
    with torch.no_grad():
        codes, indices = loaded.encode(clip)
        reconstruction = loaded.decode(codes)
    t_lat, h_lat, w_lat = loaded.latent_grid(*clip.shape[2:])
    assert codes.shape == (2, loaded.config.code_dim, t_lat, h_lat, w_lat)
    assert indices.shape == (2, t_lat, h_lat, w_lat)
    assert reconstruction.shape == clip.shape
    return loaded


Parameters = nn.Module | Iterable[nn.Parameter]


def _parameters(part: Parameters) -> list[nn.Parameter]:
    return list(part.parameters()) if isinstance(part, nn.Module) else list(part)


def check_parameter_counts(
    experiment: Any,
    expected: dict[str, int],
    *,
    frozen: dict[str, Parameters],
    trainable: dict[str, Parameters],
) -> None:
    """Gate check 2, the part every variant shares: ``experiment.parameter_counts()`` is
    ``expected`` (worked out from the config by the variant's gate, not by building the
    model), every parameter of the ``frozen`` parts is frozen and every one of the
    ``trainable`` parts takes gradients, and the optimizer groups hold exactly the trainable
    parameters, each once.

    Catches: a parameter count that changed (a block more or less, another width, a
    condition projection sized for other features), a frozen part left with
    ``requires_grad`` on (its weights leave the frozen count), a part that should train
    frozen by mistake, and optimizer groups that miss or repeat a parameter.
    """
    counts = experiment.parameter_counts()
    assert counts == expected, f"parameter counts {counts}, the config says {expected}"
    for name, part in frozen.items():
        assert not any(p.requires_grad for p in _parameters(part)), \
            f"{name} is meant to be frozen but some of its parameters require gradients"
    for name, part in trainable.items():
        assert all(p.requires_grad for p in _parameters(part)), \
            f"{name} is meant to train but some of its parameters are frozen"
    grouped = [id(p) for group in experiment.param_groups() for p in group["params"]]
    wanted = [id(p) for p in experiment.trainable.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(wanted), \
        "the optimizer groups do not hold exactly the trainable parameters, each once"


def with_other_futures(clips: torch.Tensor, context_frames: int) -> torch.Tensor:
    """``clips`` (B >= 2, 3, T, H, W) with each clip's future frames replaced by the next
    clip's: the same contexts, other (real) content after them."""
    assert clips.shape[0] >= 2, "needs two clips or more, to swap their futures"
    altered = clips.clone()
    altered[:, :, context_frames:] = clips.roll(-1, dims=0)[:, :, context_frames:]
    return altered


def check_prediction_ignores_future(experiment: Any, layout: Any, clips: torch.Tensor
                                    ) -> torch.Tensor:
    """Gate check 3, the part every variant shares: the prediction from the context of
    ``clips`` (B >= 2, 3, T, H, W) has the future's shape, is finite, and stays the same, bit
    for bit, when the true future changes.

    The true future changes for real: each clip's future frames are replaced by another
    clip's (``with_other_futures``), and the check first asserts that this changes the
    tokenizer oracle of every clip (what a model that saw the future would give). The context
    goes to ``predict`` as a view of its whole clip, as the evaluator hands it, so the future
    sits in the storage behind it; and the oracle, which is given the future, runs just
    before each prediction. So a prediction that reads past the frames it is given (through
    the view's base, a stride, or state kept from a call that saw the future) changes.

    Catches: a model that sees the future (through the storage of its context, or through
    something remembered from an ``oracle`` call that was given the future); a prediction
    of the wrong shape or with non-finite values.

    Returns the altered clips, for the variant's own checks that its training inputs do not
    move with the future (``check_training_inputs_ignore_future``).
    """
    context_frames, future_frames = layout.context_frames, layout.future_frames
    altered = with_other_futures(clips, context_frames)
    oracles, predictions = [], []
    for video in (clips, altered):
        context, future = video[:, :, :context_frames], video[:, :, context_frames:]
        oracles.append(experiment.oracle(context, future))
        predictions.append(experiment.predict(context, future_frames))
    prediction = predictions[0]
    assert prediction.shape == clips[:, :, context_frames:].shape
    assert torch.isfinite(prediction).all()
    for b, (before, after) in enumerate(zip(*oracles, strict=True)):
        assert not torch.equal(before, after), f"clip {b}: the new future left its oracle as it was"
    assert torch.equal(predictions[1], prediction), "the prediction changed with the true future"
    return altered


@contextlib.contextmanager
def predictor_calls(predictor: nn.Module) -> Iterator[list[tuple[tuple, dict, torch.Tensor]]]:
    """Records (args, kwargs, output) of every call of ``predictor`` inside the block."""
    calls: list[tuple[tuple, dict, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        calls.append((args, kwargs, output))

    handle = predictor.register_forward_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def check_prediction_uses_context(experiment: Any, layout: Any, clips: torch.Tensor) -> None:
    """Gate check: the predictor's future logits depend on the context, each clip's on its own.

    Two passes: every clip's logits in ``predict`` change when its context is swapped for
    another clip's (end to end: the experiment feeds the context to the predictor), and the
    gradient of clip 0's logits reaches clip 0's context codes and no other clip's (the
    predictor itself uses the codes, not only a condition derived from the same frames, and
    clips in a batch do not see each other). The logits are read, not the decoded frames:
    those change with the context anyway, because the context codes are decoded with them.

    Catches: a predictor that ignores its context (it predicts the same future for every
    clip, or from the condition alone), an experiment that hands it something other than
    the context, and clips of a batch mixing (a statistic pooled over the batch).
    """
    c, future_frames = layout.context_frames, layout.future_frames
    with predictor_calls(experiment.predictor) as calls:
        experiment.predict(clips[:, :, :c], future_frames)
        experiment.predict(clips.roll(1, dims=0)[:, :, :c], future_frames)
    assert len(calls) == 2, f"predict called the predictor {len(calls)} times per 2 predictions"
    (args, kwargs, logits), (_, _, swapped) = calls
    for b, (mine, other) in enumerate(zip(logits, swapped, strict=True)):
        assert not torch.equal(mine, other), \
            f"clip {b}: the predicted logits did not change when its context did"

    context_codes = args[0].detach().clone().requires_grad_(True)
    with eval_mode(experiment.predictor), torch.enable_grad():
        clip0 = experiment.predictor(context_codes, *args[1:], **kwargs)[0].sum()
        (grad,) = torch.autograd.grad(clip0, context_codes, allow_unused=True)
    grad_per_clip = (torch.zeros(len(context_codes)) if grad is None
                     else grad.flatten(1).abs().sum(1))
    assert grad_per_clip[0] > 0, "the predictor's logits do not depend on the context codes"
    assert torch.all(grad_per_clip[1:] == 0), "clip 0's logits depend on other clips' contexts"


def check_training_inputs_ignore_future(
    experiment: Any,
    clips: torch.Tensor,
    altered: torch.Tensor,
    batch_of: Callable[[torch.Tensor], dict[str, Any]],
) -> None:
    """Gate check: in the training loss, what the predictor is given (context codes, any
    condition) is the same for ``clips`` and for ``altered`` (the same contexts, other
    futures: ``check_prediction_ignores_future`` returns them), while the loss itself moves
    (its targets are the future). ``batch_of`` turns whole clips into a training batch the way
    the variant's ``train_batches`` does.

    Catches: context latents encoded from the whole clip (GroupNorm pools over time, so the
    future leaks into them), motion features computed on the future frames: a predictor
    trained to read the future that it will not have at evaluation.
    """
    inputs, losses = [], []
    for video in (clips, altered):
        with predictor_calls(experiment.predictor) as calls, torch.no_grad():
            losses.append(experiment.loss(batch_of(video))[0])
        assert len(calls) == 1, f"the loss called the predictor {len(calls)} times"
        args, kwargs, _ = calls[0]
        inputs.append([x for x in [*args, *kwargs.values()] if isinstance(x, torch.Tensor)])
    assert not torch.equal(losses[0], losses[1]), "the training loss did not see the new future"
    for before, after in zip(*inputs, strict=True):
        assert torch.equal(before, after), "the predictor's training inputs moved with the future"


def check_targets_are_future_latents(
    experiment: Any,
    layout: Any,
    clips: torch.Tensor,
    batch_of: Callable[[torch.Tensor], dict[str, Any]],
) -> None:
    """Gate check: the training targets are the future's latents, the whole clip's encoded
    latent frames from Tc' on: exactly the (T - C) / 4 latent frames that stand for the future
    frames (the causal encoder's latent frame t' covers frames 4t'-3 .. 4t').

    How: the predictor is made to output those codes as logits (x20) inside the variant's own
    training loss, on ``batch_of(clips)``; its bit accuracy must be exactly 1, which it is only
    if the loss compares against those latent frames. Sanity first: the clips move, so the
    future latent frames differ from the frames one earlier (a shift would show).

    Catches: targets shifted by one latent frame (the last context latent frame taken as the
    first future one), targets of another length.
    """
    t_ctx = layout.context_latent_frames
    with torch.no_grad():
        codes = experiment.tokenizer.encode(clips)[0]
    future = codes[:, :, t_ctx:]
    assert future.shape[2] == layout.future_frames // 4, "the latent grid is not the layout's"
    assert not torch.equal(future, codes[:, :, t_ctx - 1 : -1]), \
        "the clips do not move: targets shifted by a latent frame would look the same"

    def true_future_logits(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        assert output.shape == future.shape, (
            f"the loss asks for future logits {tuple(output.shape)}, the future's latents are "
            f"{tuple(future.shape)}")
        return 20.0 * future.to(output.dtype)

    handle = experiment.predictor.register_forward_hook(true_future_logits)
    try:
        with torch.no_grad():
            _, logs = experiment.loss(batch_of(clips))
    finally:
        handle.remove()
    assert logs["bit_accuracy"] == 1.0, (
        f"logits equal to the true future latents score bit accuracy {logs['bit_accuracy']}: "
        "the targets are other latent frames")


def check_training_steps(
    experiment: Any,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    frozen: dict[str, torch.nn.Module],
    first_step_check: Callable[[dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Gate check 4, the part every variant shares: ``steps`` optimizer steps on one batch.

    At the first step a gradient reaches every trainable parameter and none reaches the
    ``frozen`` modules (``first_step_check`` gets that step's logs, gradients still in
    place); over the steps the loss falls by 20 %; afterwards every trainable tensor has moved
    and every frozen weight and buffer is bit-identical. Returns the logs of each step, with
    the total as ``loss``.

    Catches: a frozen part that trains (a gradient reaches it, or its weights or BatchNorm
    statistics move), a trainable parameter cut off from the loss (no gradient, or it never
    moves), and a loss that does not fall on a batch the model can fit.
    """
    trainable = {n: p for n, p in experiment.trainable.named_parameters() if p.requires_grad}
    trainable_before = {n: p.detach().clone() for n, p in trainable.items()}
    frozen_before = {key: copy.deepcopy(module.state_dict()) for key, module in frozen.items()}
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        loss, logs = experiment.loss(batch)
        loss.backward()
        if step == 0:
            missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum()]
            assert not missing, f"no gradient reached {missing}"
            for key, module in frozen.items():
                assert all(p.grad is None for p in module.parameters()), f"{key} got a gradient"
            if first_step_check is not None:
                first_step_check(logs)
        optimizer.step()
        history.append({**{k: float(v) for k, v in logs.items()}, "loss": loss.item()})

    losses = [entry["loss"] for entry in history]
    assert losses[-1] < 0.8 * losses[0], losses
    for key, module in frozen.items():
        for name, tensor in module.state_dict().items():
            assert torch.equal(tensor, frozen_before[key][name]), f"frozen {key} {name} changed"
    unchanged = [n for n, p in trainable.items() if torch.equal(p, trainable_before[n])]
    assert not unchanged, f"these trainable tensors did not move: {unchanged}"
    return history
