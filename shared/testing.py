"""Builders for tests and gates: the ``micro`` preset, real modules, tiny sizes.

Every test and every variant's gate uses these, so they all exercise the same small config.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.data import TrajectoryVideos, stack_videos
from shared.magvit import MagvitTokenizer, load_tokenizer, save_tokenizer, tokenizer_config
from shared.predictor import PredictorConfig
from shared.presets import StudyConfig, study_preset


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


def check_tokenizer_checkpoint_round_trip(directory: Path) -> MagvitTokenizer:
    """Gate check 1: a micro checkpoint in the official layout (raw + ``model_ema.*``) loads
    strictly, with the EMA weights, and reconstructs a clip to its own shape. Returns the
    loaded tokenizer for further checks."""
    written = micro_tokenizer(seed=3)
    path = write_micro_tokenizer(directory / "tokenizer.ckpt", seed=3)
    payload = torch.load(path, weights_only=True)
    assert any(k.startswith("model_ema.") for k in payload["state_dict"]), "not official layout"
    loaded = load_tokenizer(path)
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


def check_prediction_ignores_future(experiment: Any, layout: Any, clips: torch.Tensor
                                    ) -> torch.Tensor:
    """Gate check 3, the part every variant shares: the prediction from the context of
    ``clips`` (B, 3, T, H, W) has the future's shape, is finite, and stays the same, bit for
    bit, when the true future is replaced by noise.

    Returns those altered clips (context kept, future random), for the variant's own checks
    that its training inputs do not move with the future while its targets do.
    """
    context_frames = layout.context_frames
    context, future = clips[:, :, :context_frames], clips[:, :, context_frames:]
    prediction = experiment.predict(context, layout.future_frames)
    assert prediction.shape == future.shape
    assert torch.isfinite(prediction).all()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        altered = clips.clone()
        altered[:, :, context_frames:] = torch.rand_like(future) * 2 - 1
    assert torch.equal(experiment.predict(altered[:, :, :context_frames], layout.future_frames),
                       prediction), "the prediction changed with the true future"
    return altered


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
