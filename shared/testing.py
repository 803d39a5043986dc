"""Builders for tests and gates: the ``micro`` preset, real modules, tiny sizes.

Every test and every variant's gate uses these, so they all exercise the same small config.
"""

from __future__ import annotations

from pathlib import Path

import torch

from shared.data import TrajectoryVideos
from shared.magvit import MagvitTokenizer, save_tokenizer, tokenizer_config
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


def micro_clips(count: int, *, split: str = "eval") -> torch.Tensor:
    """(count, 3, T, H, W) trajectory clips of the micro preset in [-1, 1]."""
    videos = TrajectoryVideos(micro_study().data, split=split, size=count)
    return torch.stack([videos[i]["video"] for i in range(count)])


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
    )
