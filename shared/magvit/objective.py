"""The tokenizer's own training objective, shared by its pretraining and by joint-i3d.

Reconstruction L1 and MSE plus the LFQ terms (entropy, commitment, bit correlation), each with
its weight; a weight of 0 leaves a term in the logs but out of the gradient.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from shared.magvit.lfq import bit_correlation_loss
from shared.magvit.model import TokenizerOutput


class AutoencoderLoss(NamedTuple):
    total: Tensor  # scalar, differentiable: the weighted sum of the terms below
    l1: Tensor  # mean |reconstruction - video|, [-1, 1] scale
    mse: Tensor  # mean (reconstruction - video)^2, [-1, 1] scale
    decorrelation: Tensor  # lfq.bit_correlation_loss of the latents


def autoencoder_loss(
    out: TokenizerOutput,
    video_bcthw: Tensor,
    *,
    l1: float,
    mse: float,
    entropy: float,
    commitment: float,
    decorrelation: float,
) -> AutoencoderLoss:
    """Weighted objective of a tokenizer forward ``out`` on ``video_bcthw`` (B, 3, T, H, W)."""
    error = out.reconstruction.float() - video_bcthw  # float: the forward may run under AMP
    l1_term = error.abs().mean()
    mse_term = error.square().mean()
    decorrelation_term = bit_correlation_loss(out.latent)
    total = (
        l1 * l1_term
        + mse * mse_term
        + entropy * out.entropy_loss
        + commitment * out.commitment_loss
        + decorrelation * decorrelation_term
    )
    return AutoencoderLoss(total, l1_term, mse_term, decorrelation_term)
