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


def check_tokenizer_checkpoint_round_trip(directory: Path) -> MagvitTokenizer:
    """Gate check 1: a micro checkpoint in the official layout (raw + ``model_ema.*``) loads
    strictly, with the EMA weights, and reconstructs a clip to its own shape. Returns the
    loaded tokenizer for further checks."""
    from shared.magvit import load_tokenizer

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
