"""The slowfast-frozen variant's config: the study preset plus how SlowFast is fed and fused.

- ``micro`` / ``tiny``: the backbone is one that ``shared.motion.pretrain`` trained on the
  trajectory classes; its file carries its config (input conventions included), so nothing
  about the input is overridden here: the variant feeds it exactly what it was trained on.
- ``full``: the official Kinetics-400 SlowFast R50. It was trained on 8 slow / 32 fast frames at
  224 px; our context is 9 frames at 128 px. Whole frames are picked (8 fast, 2 slow) rather
  than each repeated ~4 times to reach 32, which would turn smooth motion into a staircase,
  and frames are resized to 224 px so objects cover as many of its receptive fields as the
  Kinetics crops did. The project's references name no hub copy of the file, so the user
  passes ``--motion PATH`` (pytorchvideo's SLOWFAST_8x8_R50.pyth).

How much the predictor uses the features on tiny: README, "Results so far".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.errors import ConfigError
from shared.presets import StudyConfig, study_preset

VARIANT = "slowfast-frozen"


@dataclass(frozen=True, kw_only=True)
class SlowFastFrozenConfig:
    study: StudyConfig
    # Conditioning: one pooled 2304-d (tiny: 1152-d) token per clip, or one per slow frame
    # (2 at 8 fast frames). Pooled: on tiny the two trained alike, so the cheaper one wins
    # (1 token, half the cached features).
    time_resolved: bool = False
    # Input-convention overrides applied to the loaded backbone (never weight-shaping fields).
    motion_inputs: dict[str, Any] = field(default_factory=dict)
    motion_source: str | None = None  # default --motion; None: the user must pass one
    cache_features: bool = True  # tokenizer and SlowFast are frozen: compute each clip once

    def __post_init__(self) -> None:
        allowed = {"fast_frames", "image_size", "slow_selection", "mean", "std"}
        unknown = sorted(set(self.motion_inputs) - allowed)
        if unknown:
            raise ConfigError(
                f"motion_inputs may only change input conventions {sorted(allowed)}, "
                f"got {unknown}"
            )


def slowfast_frozen_config(preset: str) -> SlowFastFrozenConfig:
    study = study_preset(preset)
    if preset == "full":
        return SlowFastFrozenConfig(study=study,
                                    motion_inputs={"fast_frames": 8, "image_size": 224})
    return SlowFastFrozenConfig(study=study)
