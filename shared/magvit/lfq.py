"""Lookup-free quantization (LFQ) of MAGVIT-v2, without a codebook or a distance matrix.

Design choices:
- The implicit codebook is {-1, +1}^d. The nearest code of a latent z is sign(z) channel by
  channel (an exact 0 goes to -1, as in Open-MAGVIT2), and its index is sum_d [z_d > 0] 2^d with
  channel 0 the least significant bit. Both are O(N*d) time and memory: nothing of size 2^d is
  ever built.
- The training entropy terms of the official code start from a softmax over all 2^d codes with
  logits 2<z, c> / temperature. Because <z, c> = sum_d z_d c_d, that distribution is a product
  of independent per-bit distributions with p(c_d = +1) = sigmoid(4 z_d / temperature), so:
  * the per-sample entropy (minimised: each latent should pick one code confidently) is
    exactly the sum over bits of binary entropies;
  * the codebook entropy (maximised: the batch should use many codes) is computed here as the
    sum of the binary entropies of the batch-averaged bit probabilities. That is the entropy
    of the product of the averaged marginals, an upper bound of the exact entropy of the
    averaged 2^d-way distribution (joint entropy <= sum of marginal entropies); it equals it
    when the bits are independent across the batch. It is what makes the loss O(N*d).
- The quantized output is straight-through: its value is exactly the +-1 code, its gradient
  with respect to z is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Indices are accumulated in int32 below; 24 bits is far beyond any useful codebook anyway.
MAX_CODE_DIM = 24


def _moved(x: Tensor, dim: int) -> Tensor:
    return x.movedim(dim, -1) if dim not in (-1, x.dim() - 1) else x


def _bits_to_indices(bits: Tensor) -> Tensor:
    """Boolean bits (..., d) -> int64 indices (...), bit d weighted 2^d.

    Integer arithmetic, one bit plane at a time: exact under autocast or TF32 / bf16 matmul
    settings (a float mat-vec would round large indices there), and the only full-size
    temporary is one int32 plane, so memory stays O(N) beyond the input.
    """
    code_dim = bits.shape[-1]
    assert code_dim <= MAX_CODE_DIM, code_dim
    indices = torch.zeros(bits.shape[:-1], dtype=torch.int32, device=bits.device)
    for d in range(code_dim):
        indices.bitwise_or_(bits[..., d].to(torch.int32).bitwise_left_shift_(d))
    return indices.to(torch.int64)


def codes_to_indices(codes: Tensor, *, dim: int = 1) -> Tensor:
    """Indices (int64) of the codes or latents along ``dim``: sum_d [x_d > 0] 2^d, LSB = channel 0.

    Works on raw latents too (then it is the index of the nearest code). The output has the
    input's shape without ``dim``.
    """
    return _bits_to_indices(_moved(codes, dim) > 0)


def indices_to_codes(
    indices: Tensor, code_dim: int, *, dim: int = 1, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Inverse of :func:`codes_to_indices`: +-1 codes with the channel axis inserted at ``dim``."""
    shifts = torch.arange(code_dim, device=indices.device, dtype=torch.int64)
    bits = (indices.to(torch.int64).unsqueeze(-1) >> shifts) & 1  # (..., d)
    codes = bits.to(dtype) * 2 - 1
    return codes.movedim(-1, dim) if dim not in (-1, codes.dim() - 1) else codes


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), stable for large |logits|."""
    p = torch.sigmoid(logits)
    # -log p = softplus(-x), -log(1 - p) = softplus(x)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def binary_entropy(p: Tensor, eps: float = 1e-6) -> Tensor:
    p = p.clamp(eps, 1 - eps)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def bit_correlation_loss(z: Tensor) -> Tensor:
    """Mean squared off-diagonal correlation of the d latent channels of ``z`` (B, d, ...).

    Zero when the channels are uncorrelated over the batch's positions, 1 when all are copies
    of one. The factorised codebook entropy above cannot see bits that copy each other, and
    with it alone the tiny tokenizer's bits ended up with a mean |correlation| of 0.6: 18
    balanced bits carrying a few hundred distinct codes. Computed on the continuous latents
    (whose sign correlation follows theirs) because the sharp bit probabilities of the
    entropy terms give almost no gradient away from z = 0. O(N d^2), no codebook.
    """
    flat_nd = _moved(z, 1).reshape(-1, z.shape[1]).float()
    if flat_nd.shape[0] < 2:
        return z.new_zeros(())
    centred = flat_nd - flat_nd.mean(0)
    scaled = centred / (centred.pow(2).mean(0).sqrt() + 1e-6)
    corr_dd = scaled.T @ scaled / flat_nd.shape[0]
    off = corr_dd - torch.diag(torch.diagonal(corr_dd))
    d = z.shape[1]
    return off.pow(2).sum() / max(d * (d - 1), 1)


@dataclass
class LFQOutput:
    codes: Tensor  # like the input, values exactly +-1, straight-through gradient
    indices: Tensor  # input shape without the channel axis, int64
    entropy_loss: Tensor  # scalar: sample weight * per-sample - codebook weight * codebook
    commitment_loss: Tensor  # scalar: mean (z - sg(code))^2
    per_sample_entropy: Tensor  # scalar, nats, mean over positions
    codebook_entropy: Tensor  # scalar, nats, factorised upper bound (see module docstring)


class LFQ(nn.Module):
    """Sign quantizer over channel axis 1 with the factorised entropy and commitment losses.

    Like the official module it has no parameters and no state_dict entries, and in eval mode
    the loss terms are zeros (they are only computed in training mode).
    """

    def __init__(
        self,
        *,
        dim: int = 18,
        temperature: float = 0.01,
        sample_entropy_weight: float = 1.0,
        codebook_entropy_weight: float = 1.0,
    ) -> None:
        super().__init__()
        assert 1 <= dim <= MAX_CODE_DIM, dim
        self.dim = dim
        self.temperature = temperature
        self.sample_entropy_weight = sample_entropy_weight
        self.codebook_entropy_weight = codebook_entropy_weight

    @property
    def codebook_size(self) -> int:
        return 2**self.dim

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(codes, indices) of latents ``z`` (B, d, ...): the nearest +-1 code and its index."""
        # One pass for the bits, reused for both outputs: at a million vectors the cost is
        # memory traffic, so no extra full-size temporaries.
        positive = z > 0  # an exact 0 is not > 0, so it becomes bit 0, code -1
        indices = _bits_to_indices(_moved(positive, 1))
        hard = positive.to(z.dtype).mul_(2).sub_(1)
        if not z.requires_grad:
            return hard, indices
        # z - z.detach() is exactly 0, so the value stays exactly +-1 and d codes / d z = 1.
        return hard + (z - z.detach()), indices

    def entropy_terms(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(per-sample entropy, codebook entropy) in nats for latents ``z`` (B, d, ...)."""
        bit_logits = _moved(z, 1).reshape(-1, self.dim) * (4.0 / self.temperature)  # (N, d)
        per_sample = binary_entropy_from_logits(bit_logits).sum(-1).mean()
        mean_bit_prob = torch.sigmoid(bit_logits).mean(0)  # (d,)
        codebook = binary_entropy(mean_bit_prob).sum()
        return per_sample, codebook

    def forward(self, z: Tensor) -> LFQOutput:
        assert z.shape[1] == self.dim, (tuple(z.shape), self.dim)
        codes, indices = self.quantize(z)
        zero = z.new_zeros(())
        if not self.training:
            return LFQOutput(codes, indices, zero, zero, zero, zero)
        per_sample, codebook = self.entropy_terms(z)
        entropy_loss = (
            self.sample_entropy_weight * per_sample - self.codebook_entropy_weight * codebook
        )
        commitment = F.mse_loss(z, codes.detach())
        return LFQOutput(codes, indices, entropy_loss, commitment, per_sample, codebook)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}, temperature={self.temperature}"
