"""Model glue: a trainable tokenizer, I3D motion tokens and the latent predictor, trained jointly.

Design choices:

- One loss, three parts. (1) The tokenizer's own objective on the whole clip: L1 (+ MSE) of
  its reconstruction through the decoder plus the LFQ terms the config weighs (the
  bit-correlation loss by default); this is what keeps encoder and decoder an autoencoder
  while they move. (2) The bits cross-entropy of the predicted future codes against the
  codes of the whole clip, DETACHED: the targets come from the current tokenizer but take no
  gradient, otherwise the cheapest way down would be an encoder whose future codes are
  trivial to predict. The context codes keep their straight-through gradient, so the
  prediction loss reaches the encoder through them.
  (3) Optionally an L1 pixel loss on the decoded predicted future (straight-through signs of
  tanh(logits)), off by default (see config.py).
- Context latents are the context frames encoded on their own, target latents are the whole
  clip's last latent frames, and decoding joins context and predicted codes: the helpers of
  ``shared.latent_experiment`` (its docstring says why). The targets come from a no-grad
  encoder pass (a third of the cost of one with a backward).
- The reconstruction terms may use only ``recon_clips`` clips of a batch (the first ones;
  the order is shuffled every epoch): the decoder's forward and backward over whole 17-frame
  clips is ~70 % of a step on a CPU, and the reconstruction loss only has to anchor a
  tokenizer that moves at a tenth of the rate. The batch carries the choice per clip,
  ``recon_weight`` (B,): B / recon_clips on the chosen clips, 0 on the others (mean 1 over
  the batch), so it survives the training loop's micro-batching, which splits every per-clip
  tensor and scales each micro-batch's loss by its share of the clips. The reconstruction
  part of a (micro-)batch's loss is its objective on its chosen clips times its mean weight:
  for the per-clip terms (L1, MSE, commitment, per-sample entropy) that is exactly the
  weighted mean over its clips, so the scaled micro-batch losses add up to the whole batch's.
- The batch statistics of the tokenizer's objective (the bit-correlation loss, and the LFQ
  codebook entropy when weighted) are computed per micro-batch, over its chosen clips, and
  weighted by its share of the reconstruction weight, as usual for gradient accumulation.
  That is inexact: a sample correlation over fewer latent positions is biased upwards (by
  ~1/N for N positions) and noisier, and the entropy of averaged bit probabilities is
  concave, so per micro-batch it comes out lower. Measured on micro, 3 chosen clips of 8 in
  micro-batches of one clip (tests/test_joint_i3d_micro_batches.py): the default loss moves by
  2.5e-3 of 1.1 and its gradient by 10 % of its norm (with the entropy term on: 1e-2 and
  12 %); the per-clip terms alone agree to 1e-8. A micro clip has 48 latent positions, a
  full one 1,280, so at full the sampling error is ~5x smaller. Without micro-batching every
  number is as before.
- Motion enters as conditioning tokens of the predictor (``condition_dim`` = I3D's
  feature_dim): one token per Mixed_5c time step of the context, so the order of the motion
  survives, and every context and future token attends to them in every layer without any
  change to the shared predictor. An adaptive norm (FiLM) would need one vector per clip and
  new predictor blocks. A LayerNorm over the features (the fusion) puts them on one scale:
  pooled post-ReLU activations have an arbitrary scale per checkpoint, and it shifts when a
  trainable I3D moves.
- I3D sees only the context frames. Its floor is 9 frames; a shorter context (micro: 5) is
  stretched by repeating whole frames, the input convention of ``shared.motion.inputs``.
- The oracle is the CURRENT tokenizer's round trip (it moves during training); the drift of
  the tokenizer is measured per epoch on held-out probe clips (``epoch_metrics``): its
  reconstruction PSNR, the oracle PSNR, and the share of code bits that changed since the
  start. The start's codes are computed when the experiment is moved to its device (the
  loop does that before resuming or training), or at the first loss or drift measurement if
  it never is: on the device and in the precision the drift is then measured with, not on
  the CPU at construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from branches.joint_i3d.config import JointI3DConfig, JointLossConfig
from orchestrator.client import Run
from shared.data import stack_videos, video_batches
from shared.experiment import Experiment, index_batches
from shared.latent_experiment import (
    LatentLayout,
    decode_future,
    encode_context,
    encode_future_target,
    oracle_future,
    predict_future,
    sign_readout_row,
)
from shared.magvit import MagvitTokenizer
from shared.magvit.objective import autoencoder_loss
from shared.metrics import Predictor, clip_metrics
from shared.motion.i3d import MIN_FRAMES, I3DFeatures, InceptionI3d
from shared.motion.inputs import select_frames
from shared.predictor import LatentPredictor, codes_from_logits, latent_loss
from shared.runtime import eval_mode


class JointModules(nn.Module):
    """Everything that trains and is checkpointed: tokenizer, predictor, the fusion norm, and
    the I3D backbone only when it is trainable (a frozen one stays outside, like the baseline's
    frozen tokenizer)."""

    def __init__(
        self,
        tokenizer: MagvitTokenizer,
        predictor: LatentPredictor,
        fusion: nn.LayerNorm,
        motion: I3DFeatures | None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.predictor = predictor
        self.fusion = fusion
        self.motion = motion


class JointI3DExperiment(Experiment):
    """Tokenizer + I3D-conditioned predictor, trained end to end; nothing is cached."""

    def __init__(
        self,
        *,
        modules: JointModules,
        motion: I3DFeatures,
        train_set: Dataset[dict[str, Any]],
        train_clips: int,
        layout: LatentLayout,
        loss: JointLossConfig,
        tokenizer_lr_scale: float,
        motion_lr_scale: float,
        recon_clips: int | None = None,
        probe_bcthw: torch.Tensor | None = None,
    ) -> None:
        self.trainable = modules
        self.tokenizer = modules.tokenizer
        self.predictor = modules.predictor
        self.fusion = modules.fusion
        self.motion = motion  # modules.motion when trainable, else held here only
        self.train_set = train_set
        self.train_clips = train_clips
        self.layout = layout
        self.loss_weights = loss
        self.tokenizer_lr_scale = tokenizer_lr_scale
        self.motion_lr_scale = motion_lr_scale
        self.recon_clips = recon_clips
        self.probe_bcthw = probe_bcthw
        # The pretrained tokenizer's codes of the probe clips, on the experiment's device:
        # drift is measured against them. Filled by to() (or at first use), see the docstring.
        self.probe_codes_start: torch.Tensor | None = None

    def frozen_modules(self) -> list[nn.Module]:
        return [self.motion] if self.motion.frozen else []

    def to(self, device: torch.device) -> None:
        super().to(device)
        if self.probe_codes_start is not None:
            self.probe_codes_start = self.probe_codes_start.to(device)
        self._ensure_probe_start()

    def param_groups(self) -> list[dict[str, Any]]:
        # The predictor's group first: the loop logs the rate of group 0.
        groups: list[dict[str, Any]] = [
            {"params": [*self.predictor.parameters(), *self.fusion.parameters()]},
            {"params": list(self.tokenizer.parameters()), "lr_scale": self.tokenizer_lr_scale},
        ]
        if not self.motion.frozen:
            groups.append({"params": [p for p in self.motion.parameters() if p.requires_grad],
                           "lr_scale": self.motion_lr_scale})
        return groups

    def motion_tokens(self, context_bcthw: torch.Tensor) -> torch.Tensor:
        """Context frames -> normalised I3D tokens (B, N_cond, feature_dim)."""
        if context_bcthw.shape[2] < MIN_FRAMES:
            context_bcthw = select_frames(context_bcthw, MIN_FRAMES)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.motion.frozen):
            features = self.motion(context_bcthw)
        tokens_bnd = features if features.dim() == 3 else features[:, None]
        return self.fusion(tokens_bnd.float())

    def prepare(self, log: Run, *, rehearse: bool = False) -> None:
        # The probe figures of the pretrained tokenizer, so the per-epoch ones have a start.
        # A rehearsal skips them: its epoch's drift runs the same passes on the same clip.
        if rehearse:
            return
        start = self.epoch_metrics()
        if start:
            log.emit("probe", epoch=0, extra=start)
            print(f"pretrained tokenizer on the probe clips: {start['tokenizer_psnr']:.2f} dB, "
                  f"oracle {start['oracle_psnr']:.2f} dB", flush=True)

    # -- training -----------------------------------------------------------------------

    def recon_weights(self, batch_clips: int) -> torch.Tensor:
        """(B,) float64 on the CPU: each clip's weight in the reconstruction terms,
        B / recon_clips on the first recon_clips clips and 0 on the others (mean 1)."""
        chosen = min(self.recon_clips or batch_clips, batch_clips)
        weight_b = torch.zeros(batch_clips, dtype=torch.float64)
        weight_b[:chosen] = batch_clips / chosen
        return weight_b

    def train_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[dict[str, Any]]:
        chunks = list(index_batches(order, batch_size))
        # Clips rendered in the loader's workers when it has some (the full preset), a few
        # batches ahead of the step; pinned on CUDA, so the copy need not wait.
        for chunk, videos in zip(chunks, video_batches(self.train_set, chunks, self.loader),
                                 strict=True):
            # recon_weight stays on the CPU: the loss reads it without a device sync.
            yield {"video": videos.to(self.device, non_blocking=True),
                   "recon_weight": self.recon_weights(len(chunk))}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        video_bcthw = batch["video"]
        weights, layout = self.loss_weights, self.layout
        context_bcthw = video_bcthw[:, :, : layout.context_frames]
        self._ensure_probe_start()  # before the first step changes the tokenizer
        logs: dict[str, float] = {}

        # (1) The tokenizer's own objective on the clips ``recon_weight`` chooses, times this
        # (micro-)batch's mean weight (see the docstring).
        weight_b = batch.get("recon_weight")
        if weight_b is None:
            weight_b = self.recon_weights(video_bcthw.shape[0])
        chosen, share = recon_selection(weight_b, video_bcthw.shape[0])
        total = video_bcthw.new_zeros((), dtype=torch.float32)
        if chosen:
            # A slice when the chosen clips lead the batch (always, unless split): no copy.
            in_order = chosen == list(range(len(chosen)))
            recon_bcthw = video_bcthw[: len(chosen)] if in_order else video_bcthw[chosen]
            out = self.tokenizer(recon_bcthw)
            recon = autoencoder_loss(
                out, recon_bcthw, l1=weights.recon_l1, mse=weights.recon_mse,
                entropy=weights.entropy, commitment=weights.commitment,
                decorrelation=weights.decorrelation,
            )
            total = share * recon.total
            logs |= {"recon_l1": float(recon.l1.detach()),
                     "recon_psnr": _psnr(out.reconstruction.float(), recon_bcthw)}

        # (2) Predict the future codes from the context alone; the targets, the current
        # tokenizer's codes of the whole clip, take no gradient.
        with torch.no_grad():
            target_codes = encode_future_target(self.tokenizer, video_bcthw, layout)
        context_codes = encode_context(self.tokenizer, context_bcthw)
        condition = self.motion_tokens(context_bcthw)
        logits = self.predictor(context_codes, tuple(target_codes.shape[2:]), condition).float()
        latent = latent_loss(logits, target_codes, self.predictor.config.loss)
        total = total + weights.latent * latent.loss

        logs = {"latent": float(latent.loss.detach()),
                "bit_accuracy": float(latent.bit_accuracy)} | logs
        # (3) Optional: the decoded predicted future against the true one.
        if weights.future_pixel:
            soft = torch.tanh(logits)
            predicted_codes = codes_from_logits(logits) + (soft - soft.detach())
            future = decode_future(self.tokenizer, context_codes, predicted_codes,
                                   layout.future_frames)
            future_l1 = F.l1_loss(future.float(), video_bcthw[:, :, layout.context_frames :])
            total = total + weights.future_pixel * future_l1
            logs["future_l1"] = float(future_l1.detach())
        return total, logs

    # -- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, context_bcthw: torch.Tensor, future_frames: int,
                readout: str | None = None) -> torch.Tensor:
        with eval_mode(self.trainable):
            return predict_future(self.tokenizer, self.predictor, context_bcthw,
                                  future_frames, self.motion_tokens(context_bcthw), readout)

    def alternative_rows(self) -> dict[str, Predictor]:
        return sign_readout_row(self.predictor, self.predict)

    @torch.no_grad()
    def oracle(self, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor) -> torch.Tensor:
        """The current tokenizer's round trip of the true future (it changes as it trains)."""
        with eval_mode(self.trainable):
            return oracle_future(self.tokenizer, context_bcthw, future_bcthw)

    @torch.no_grad()
    def _ensure_probe_start(self) -> None:
        """Encode the probe clips once, on the experiment's device, in the precision
        ``epoch_metrics`` measures in (the evaluation's, not the training step's autocast)."""
        if self.probe_bcthw is None or self.probe_codes_start is not None:
            return
        with eval_mode(self.tokenizer), self.inference.autocast():
            self.probe_codes_start = self.tokenizer.encode(self.probe_bcthw.to(self.device))[0]

    @torch.no_grad()
    def epoch_metrics(self) -> dict[str, float]:
        """How the tokenizer moved, on held-out probe clips: reconstruction PSNR of the whole
        clip, oracle PSNR of the future, and the share of code bits that changed."""
        self._ensure_probe_start()
        if self.probe_bcthw is None or self.probe_codes_start is None:
            return {}
        probe = self.probe_bcthw.to(self.device)
        layout, c = self.layout, self.layout.context_frames
        with eval_mode(self.tokenizer):
            codes = self.tokenizer.encode(probe)[0]
            reconstruction = self.tokenizer.decode(codes).clamp(-1, 1)
            # The oracle (``oracle_future``) from these codes: its future codes are the whole
            # clip's, encoded once here for both (at full an encode is ~40 s on a CPU).
            oracle = decode_future(self.tokenizer, encode_context(self.tokenizer, probe[:, :, :c]),
                                   codes[:, :, layout.context_latent_frames :],
                                   layout.future_frames)
        return {
            "tokenizer_psnr": float(clip_metrics(reconstruction, probe)["psnr"].mean()),
            "oracle_psnr": float(clip_metrics(oracle, probe[:, :, c:])["psnr"].mean()),
            "code_bits_changed": float(
                (codes != self.probe_codes_start.to(codes.device)).float().mean()),
        }


def recon_selection(weight_b: torch.Tensor, batch_clips: int) -> tuple[list[int], float]:
    """(indices of the clips with a positive ``weight_b``, the mean weight): the clips in the
    reconstruction terms of a (micro-)batch, and the factor on their objective."""
    if weight_b.dim() != 1 or weight_b.shape[0] != batch_clips:
        raise ValueError(f"recon_weight of shape {tuple(weight_b.shape)} is not one weight per "
                         f"clip of the batch ({batch_clips},)")
    weights = weight_b.tolist()
    chosen = [i for i, w in enumerate(weights) if w > 0]
    # One value on every chosen clip: the LFQ batch terms weigh a set of clips, not each clip.
    if min(weights) < 0 or len({weights[i] for i in chosen}) > 1:
        raise ValueError(f"recon_weight {weights} must hold one positive value on the chosen "
                         "clips and 0 on the others: build it with recon_weights()")
    return chosen, math.fsum(weights) / batch_clips


def _psnr(reconstruction: torch.Tensor, video: torch.Tensor) -> float:
    """Batch PSNR in dB on the [0, 1] scale, clipped: a cheap training log, not the metric."""
    with torch.no_grad():
        mse = ((reconstruction.clamp(-1, 1) - video) / 2).square().mean().clamp_min(1e-10)
        return float(-10 * torch.log10(mse))


def build_experiment(
    config: JointI3DConfig,
    *,
    backbone: InceptionI3d,
    tokenizer: MagvitTokenizer,
    train_set: Dataset[dict[str, Any]],
    train_clips: int,
    cache: object | None = None,
    probe_set: Dataset[dict[str, Any]] | None = None,
) -> JointI3DExperiment:
    """``cache`` must be None: the tokenizer trains, so nothing it computes can be cached."""
    assert cache is None, "joint-i3d trains its tokenizer: run it with cache_key=None"
    study = config.study
    tokenizer.requires_grad_(True).train().set_activation_checkpointing(
        config.checkpoint_tokenizer)
    features = I3DFeatures(backbone, time_resolved=config.motion.time_resolved,
                           frozen=not config.motion.trainable)
    if config.motion.trainable:
        features.requires_grad_(True)
        # The classifier head is not on the feature path: it would take no gradient.
        features.backbone.logits.requires_grad_(False)
    predictor = LatentPredictor(replace(study.predictor, code_dim=tokenizer.config.code_dim,
                                        condition_dim=features.feature_dim))
    probe = None
    if probe_set is not None:
        count = min(config.probe_clips, len(probe_set))  # type: ignore[arg-type]
        probe = stack_videos(probe_set, range(count))
    return JointI3DExperiment(
        modules=JointModules(tokenizer, predictor, nn.LayerNorm(features.feature_dim),
                             None if features.frozen else features),
        motion=features,
        train_set=train_set,
        train_clips=train_clips,
        layout=LatentLayout(study.data.frames, study.data.context_frames),
        loss=config.loss,
        tokenizer_lr_scale=config.tokenizer_lr_scale,
        motion_lr_scale=config.motion_lr_scale,
        recon_clips=config.recon_clips,
        probe_bcthw=probe,
    )
