"""The study's presets: what every variant shares at ``micro``, ``tiny`` and ``full``.

A variant takes a copy of a preset and changes what is its own (see ``branches/*/config.py``).

- ``micro``: tests, gates and CI: 16 px, 9 frames, a few steps, seconds on a CPU.
- ``tiny``: the main job on a laptop or a CPU box: 32 px, 17 frames (9 context, 8 future),
  the tokenizer pretrained by ``python -m shared.magvit.pretrain --preset tiny``.
- ``full``: a GPU: 128 px, 17 frames, the official 2^18-code tokenizer from the hub and a
  predictor sized like the seeds' (12 layers, 8 heads, width 256).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared.data import TrajectoryConfig, trajectory_config
from shared.errors import ConfigError
from shared.predictor import PredictorConfig, predictor_config
from shared.training import TrainConfig

OFFICIAL_TOKENIZER = "hf://TencentARC/Open-MAGVIT2-Tokenizer-262144-Video/video_128_262144.ckpt"


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    name: str
    data: TrajectoryConfig
    tokenizer_preset: str  # shared.magvit config name the checkpoint must match
    tokenizer: str | None  # default checkpoint source; None: pass --tokenizer
    predictor: PredictorConfig
    train: TrainConfig


def _micro() -> StudyConfig:
    return StudyConfig(
        name="micro",
        data=trajectory_config("micro"),
        tokenizer_preset="micro",
        tokenizer=None,
        predictor=predictor_config("micro"),
        train=TrainConfig(epochs=2, batch_size=8, lr=3e-3, train_clips=32, eval_clips=8,
                          warmup_steps=2, log_every=2, eval_batch_size=8, strip_clips=2),
    )


def _tiny() -> StudyConfig:
    return StudyConfig(
        name="tiny",
        data=trajectory_config("tiny"),
        tokenizer_preset="tiny",
        tokenizer=None,
        predictor=predictor_config("tiny"),
        # Three epochs, chosen on validation over two seeds (`python -m benchmarks.tiny_choices
        # --confirm`): +0.063 dB [+0.044, +0.084] over two, a paired interval that excludes 0;
        # a fourth is not tried, to leave room for three variants on 2 cores within `orch
        # run`'s 15 minutes. Samples x4 over x2 was a tie there, so the readout stays x2
        # (README, "Results so far").
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-3, train_clips=2048, eval_clips=128,
                          warmup_steps=20, log_every=10, eval_batch_size=32),
    )


def _full() -> StudyConfig:
    return StudyConfig(
        name="full",
        data=trajectory_config("full"),
        tokenizer_preset="official",
        tokenizer=OFFICIAL_TOKENIZER,
        predictor=predictor_config("full"),
        # Rendering a 128 px clip takes ~21 ms of one core, a batch of 16 a third of a
        # second: in 4 DataLoader workers it overlaps the GPU's step instead of preceding it.
        # Evaluation: 512 held-out clips after every 5th epoch and the last (10 in 50 epochs),
        # under the training's autocast (bf16). Per clip, an evaluation encodes the context
        # once and decodes the future once per readout draw (2); the final one adds the
        # reference rows, the oracle's round trip among them (2 encodes, 1 decode). Every
        # epoch would cost the frozen-tokenizer variants 5.7x their training (measured FLOPs:
        # their predictor is cheap, the tokenizer's decodes are not; the plan prints both).
        train=TrainConfig(epochs=50, batch_size=16, lr=3e-4, train_clips=10_000, eval_clips=512,
                          warmup_steps=500, log_every=50, eval_batch_size=16, loader_workers=4,
                          eval_every=5, eval_precision="amp"),
    )


STUDY_PRESETS: dict[str, Callable[[], StudyConfig]] = {
    "micro": _micro,
    "tiny": _tiny,
    "full": _full,
}


def study_preset(name: str) -> StudyConfig:
    if name not in STUDY_PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(STUDY_PRESETS)}")
    return STUDY_PRESETS[name]()
