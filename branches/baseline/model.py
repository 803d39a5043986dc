"""Model glue: a frozen tokenizer and a trainable latent predictor."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from branches.baseline.config import BaselineConfig
from shared.latent_cache import ClipCache
from shared.latent_experiment import FrozenTokenizerExperiment, frozen_tokenizer_experiment
from shared.magvit import MagvitTokenizer


def build_experiment(
    config: BaselineConfig,
    *,
    tokenizer: MagvitTokenizer,
    train_set: Dataset[dict[str, Any]],
    train_clips: int,
    cache: ClipCache | None,
) -> FrozenTokenizerExperiment:
    return frozen_tokenizer_experiment(config.study, tokenizer=tokenizer, train_set=train_set,
                                       train_clips=train_clips, cache=cache)
