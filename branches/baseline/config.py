"""The baseline's config: the study preset as it is (the latent loss is the predictor's)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.presets import StudyConfig, study_preset

VARIANT = "baseline"


@dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    study: StudyConfig
    cache_latents: bool = True  # the tokenizer is frozen: encode each training clip once


def baseline_config(preset: str) -> BaselineConfig:
    return BaselineConfig(study=study_preset(preset))
