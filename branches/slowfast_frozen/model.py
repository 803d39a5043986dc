"""Model glue: a frozen tokenizer, frozen SlowFast features as conditioning tokens, and a
trainable latent predictor.

Design choices:
- SlowFast sees the CONTEXT frames only (the experiment slices them off before calling the
  condition), so no future frame can reach a prediction through the features.
- Its features enter the predictor as tokens (``LatentPredictor`` projects them with one Linear
  and prepends them): (B, 1, D) pooled over time, or (B, Ts, D) one per slow frame. D is 2304
  for the Kinetics backbone, 1152 for the tiny one.
- Frozen means: no parameter takes a gradient, and BatchNorm stays in eval mode even when a
  parent calls ``.train()`` (``SlowFastFeatures(frozen=True)``), so a training step leaves every
  buffer as it was. Features are computed under ``no_grad`` and cached beside the latents, in
  a cache of their own whose key holds a hash of the backbone's weights and its config, so
  another backbone never reuses them while the latents are shared with the baseline.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from branches.slowfast_frozen.config import SlowFastFrozenConfig
from shared.latent_cache import ClipCache
from shared.latent_experiment import (
    FrozenTokenizerExperiment,
    frozen_tokenizer_experiment,
    weights_fingerprint,
)
from shared.magvit import MagvitTokenizer
from shared.motion.slowfast import SlowFastFeatures, SlowFastR50


class SlowFastCondition:
    """A ``ConditionSource``: context (B, 3, Tc, H, W) in [-1, 1] -> tokens (B, N_cond, D)."""

    def __init__(self, backbone: SlowFastR50, *, time_resolved: bool) -> None:
        self.features = SlowFastFeatures(backbone, frozen=True, time_resolved=time_resolved)
        self.module: nn.Module = self.features  # what the experiment moves and keeps frozen
        self.time_resolved = time_resolved
        self.cache_key: dict[str, Any] = {"motion": {
            "backbone": "slowfast",
            "weights": weights_fingerprint(backbone),
            "config": asdict(backbone.config),  # input conventions decide the features too
            "time_resolved": time_resolved,
        }}

    @property
    def feature_dim(self) -> int:
        return self.features.feature_dim

    def __call__(self, context_bcthw: torch.Tensor) -> torch.Tensor:
        features = self.features(context_bcthw)  # (B, D) or (B, Ts, D)
        return features if self.time_resolved else features[:, None, :]


def build_experiment(
    config: SlowFastFrozenConfig,
    *,
    condition: SlowFastCondition,
    tokenizer: MagvitTokenizer,
    train_set: Dataset[dict[str, Any]],
    train_clips: int,
    cache: ClipCache | None,
    condition_cache: ClipCache | None = None,
) -> FrozenTokenizerExperiment:
    return frozen_tokenizer_experiment(config.study, tokenizer=tokenizer, train_set=train_set,
                                       train_clips=train_clips, cache=cache,
                                       condition=condition, condition_cache=condition_cache)
