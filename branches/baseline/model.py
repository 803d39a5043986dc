"""Model glue: a frozen tokenizer and a trainable latent predictor."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch.utils.data import Dataset

from branches.baseline.config import BaselineConfig
from shared.latent_cache import ClipCache
from shared.latent_experiment import FrozenTokenizerExperiment, LatentLayout
from shared.magvit import MagvitTokenizer
from shared.predictor import LatentPredictor


def build_experiment(
    config: BaselineConfig,
    *,
    tokenizer: MagvitTokenizer,
    train_set: Dataset[dict[str, Any]],
    train_clips: int,
    cache: ClipCache | None,
) -> FrozenTokenizerExperiment:
    study = config.study
    tokenizer.requires_grad_(False).eval()
    predictor = LatentPredictor(replace(study.predictor, code_dim=tokenizer.config.code_dim))
    return FrozenTokenizerExperiment(
        tokenizer=tokenizer,
        predictor=predictor,
        train_set=train_set,
        train_clips=train_clips,
        layout=LatentLayout(study.data.frames, study.data.context_frames),
        cache=cache,
    )
