"""A transformer that predicts future LFQ latents from context latents.

The Open-MAGVIT2 tokenizer turns a clip into codes (B, 18, T', H', W') with values in
{-1, +1}. Given the codes of the context frames, ``LatentPredictor`` outputs 18 logits (one
per LFQ bit) for every position of the future latent grid (Tf', H', W').

Design choices:

- Non-autoregressive: every future latent frame is predicted in one forward pass. The future
  positions enter as a learned mask token plus their position, and a bidirectional
  transformer runs over [condition tokens, context tokens, future query tokens]. One pass
  instead of Tf' * H' * W' sequential steps keeps training and sampling fast on a CPU, and
  no future code is ever an input, so nothing from the true future can leak into a
  prediction: ``forward`` takes the context and the future grid's *size*, nothing else.
- Positions are factorised sinusoids over (t, h, w), computed on the fly for whatever grid
  arrives: no fixed-size table, so no sequence-length limit (the seeds' learned table of
  1,000 entries crashed on a 25,600-token sequence). The width is split into a time, a
  height and a width part; the future's time positions continue after the context's.
- Conditioning (motion features: I3D 1024-d, SlowFast 2304-d, one vector per clip or a few
  per time step) is a tensor (B, N_cond, D_cond), projected by a Linear to the width and
  prepended as extra tokens. As tokens, every context and future token can attend to them
  in every layer, any N_cond works without changing the model, and with ``condition_dim=0``
  the model is exactly the unconditioned baseline (no dead parameters). Adding the feature
  to every token (FiLM style) would need one vector per clip and a choice of where to add.
- Pre-norm blocks (LayerNorm -> attention / GELU MLP -> residual) with attention from
  ``shared.attention`` (SDPA or flash-attn), as in nanoGPT.

The training loss (``latent_loss``) and the code readouts sit in a small functions section at
the end: they are the only things every variant needs next to the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.attention import attention
from shared.errors import ConfigError

LOSS_KINDS = ("bits", "mse")
READOUTS = ("sign", "mean", "samples")
# The "samples" readout draws from a generator of its own with this seed: a prediction is a
# function of the weights and the context alone, and evaluating never moves the global RNG.
READOUT_SEED = 0
# Initial copy-prior gain: logit 0.6 x the last context code, i.e. that code at
# 2 sigmoid(0.6) - 1 = 0.29 of full contrast under the "mean" readout. Low contrast because a
# full-contrast copy renders the moving parts wrongly (README, "Results so far").
COPY_GAIN_INIT = 0.6


@dataclass(kw_only=True)
class PredictorConfig:
    code_dim: int = 18  # LFQ bits per latent position (2^18 codebook)
    width: int = 256
    depth: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    condition_dim: int = 0  # D_cond of the conditioning tokens; 0 = no conditioning
    # One token per patch x patch latent positions: a fine latent grid (e.g. 16x16 from a 2x
    # spatial tokenizer) then costs no more attention than a coarse one.
    patch: int = 1
    loss: str = "bits"  # "bits": BCE over the LFQ bits; "mse": MSE of tanh(logits) vs codes
    # What the decoder gets for the predicted future (see ``readout``): "sign", the most likely
    # code (a valid LFQ token); "mean", each bit's expected value in [-1, 1]; "samples",
    # ``readout_samples`` codes drawn from the bit probabilities, whose decoded frames are
    # averaged.
    readout: str = "sign"
    readout_samples: int = 2
    # Add a learned per-bit gain times the last context latent frame to every future frame's
    # logits: a copy-last prior in latent space, so the transformer learns the change rather
    # than re-deriving the static background (see ``COPY_GAIN_INIT``).
    copy_prior: bool = False

    def __post_init__(self) -> None:
        for name in ("code_dim", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"predictor {name}={getattr(self, name)} must be at least 1")
        if self.width % self.heads:
            raise ConfigError(
                f"predictor width={self.width} must be a multiple of heads={self.heads}"
            )
        if self.width % 2 or self.width < 6:
            raise ConfigError(
                f"predictor width={self.width} must be even and at least 6 "
                "(it holds sin/cos positions for t, h and w)"
            )
        if self.mlp_ratio <= 0:
            raise ConfigError(f"predictor mlp_ratio={self.mlp_ratio} must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"predictor dropout={self.dropout} must be in [0, 1)")
        if self.patch < 1:
            raise ConfigError(f"predictor patch={self.patch} must be at least 1")
        if self.condition_dim < 0:
            raise ConfigError(
                f"predictor condition_dim={self.condition_dim} must be >= 0 (0 = no condition)"
            )
        if self.loss not in LOSS_KINDS:
            raise ConfigError(f"predictor loss={self.loss!r}: use one of {', '.join(LOSS_KINDS)}")
        if self.readout not in READOUTS:
            raise ConfigError(
                f"predictor readout={self.readout!r}: use one of {', '.join(READOUTS)}"
            )
        if self.readout_samples < 1:
            raise ConfigError(
                f"predictor readout_samples={self.readout_samples} must be at least 1"
            )


def _micro() -> PredictorConfig:
    return PredictorConfig(width=32, depth=2, heads=2)


def _tiny() -> PredictorConfig:
    # The tiny tokenizer's 16x16 latent grid in 2x2 patches: 8x8 tokens per latent frame.
    # "samples" with 2 draws (each extra draw is one more decode, for little more) and the copy
    # prior scored best on tiny (README, "Results so far").
    return PredictorConfig(width=128, depth=4, heads=4, patch=2, readout="samples",
                           readout_samples=2, copy_prior=True)


def _full() -> PredictorConfig:
    # Sized like the seeds' predictor. The readout is tiny's best ("sign" < "mean" < "samples"
    # there); it changes only how a prediction is decoded, not what is trained.
    return PredictorConfig(width=256, depth=12, heads=8, dropout=0.1, readout="samples",
                           readout_samples=2)


PREDICTOR_CONFIGS: dict[str, Callable[[], PredictorConfig]] = {
    "micro": _micro,
    "tiny": _tiny,
    "full": _full,
}


def predictor_config(name: str) -> PredictorConfig:
    """A fresh config of the named preset; change the copy, not the registry."""
    if name not in PREDICTOR_CONFIGS:
        raise ConfigError(
            f"unknown predictor preset {name!r}: use one of {', '.join(PREDICTOR_CONFIGS)}"
        )
    return PREDICTOR_CONFIGS[name]()


def sinusoid_1d(positions_n: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) [sin | cos] at geometric frequencies 1 .. 1/10000."""
    assert dim % 2 == 0
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions_n.device)
        / half
    )
    angles_nf = positions_n.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([angles_nf.sin(), angles_nf.cos()], dim=-1)


def grid_positions(
    grid: tuple[int, int, int], dim: int, *, t_offset: int = 0, device: torch.device | None = None
) -> torch.Tensor:
    """Factorised sinusoidal positions for a (T, H, W) grid -> (T*H*W, dim), t-major order.

    The width is split into three even parts (time gets the remainder); time positions start
    at ``t_offset``, so a future grid continues where its context ends. Computed on the fly:
    any grid size works.
    """
    assert dim % 2 == 0 and dim >= 6
    t, h, w = grid
    dim_hw = 2 * (dim // 6)
    dim_t = dim - 2 * dim_hw
    t_n = torch.arange(t_offset, t_offset + t, device=device)
    h_n = torch.arange(h, device=device)
    w_n = torch.arange(w, device=device)
    pos_t = sinusoid_1d(t_n, dim_t)[:, None, None, :].expand(t, h, w, dim_t)
    pos_h = sinusoid_1d(h_n, dim_hw)[None, :, None, :].expand(t, h, w, dim_hw)
    pos_w = sinusoid_1d(w_n, dim_hw)[None, None, :, :].expand(t, h, w, dim_hw)
    return torch.cat([pos_t, pos_h, pos_w], dim=-1).reshape(t * h * w, dim)


class SelfAttention(nn.Module):
    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x_bnc: torch.Tensor) -> torch.Tensor:
        b, n, c = x_bnc.shape
        qkv_bn3hd = self.qkv(x_bnc).view(b, n, 3, self.heads, c // self.heads)
        qkv_3bhnd = qkv_bn3hd.permute(2, 0, 3, 1, 4)
        out_bhnd = attention(
            qkv_3bhnd[0], qkv_3bhnd[1], qkv_3bhnd[2],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out_bhnd.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * config.width)
        self.norm_attn = nn.LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.norm_mlp = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, hidden), nn.GELU(), nn.Linear(hidden, config.width)
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x_bnc: torch.Tensor) -> torch.Tensor:
        x_bnc = x_bnc + self.drop(self.attn(self.norm_attn(x_bnc)))
        return x_bnc + self.drop(self.mlp(self.norm_mlp(x_bnc)))


class LatentPredictor(nn.Module):
    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        self.config = config
        token_dim = config.code_dim * config.patch**2  # codes of one patch, flattened
        self.code_in = nn.Linear(token_dim, config.width)
        self.mask_token = nn.Parameter(torch.zeros(config.width))
        self.condition_in = (
            nn.Linear(config.condition_dim, config.width) if config.condition_dim else None
        )
        # Tells condition tokens apart from grid tokens (they carry no (t, h, w) position).
        self.condition_token = (
            nn.Parameter(torch.zeros(config.width)) if config.condition_dim else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, token_dim)
        self.copy_gain = (
            nn.Parameter(torch.full((config.code_dim,), COPY_GAIN_INIT))
            if config.copy_prior else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        # Residual branches scaled down with depth so the stream's variance stays ~constant.
        for block in self.blocks:
            assert isinstance(block, Block)
            for proj in (block.attn.proj, block.mlp[2]):
                assert isinstance(proj, nn.Linear)
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.depth))
        nn.init.normal_(self.mask_token, std=0.02)
        if self.condition_token is not None:
            nn.init.normal_(self.condition_token, std=0.02)

    def forward(
        self,
        context_codes_bcthw: torch.Tensor,
        future_grid: tuple[int, int, int],
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Context codes (B, 18, Tc', H', W') -> future logits (B, 18, Tf', H', W').

        ``future_grid`` is (Tf', H', W'); ``condition`` is (B, N_cond, condition_dim) or None.
        """
        cfg = self.config
        if context_codes_bcthw.dim() != 5 or context_codes_bcthw.shape[1] != cfg.code_dim:
            raise ConfigError(
                f"context codes have shape {tuple(context_codes_bcthw.shape)}: expected "
                f"(B, {cfg.code_dim}, T, H, W) from the tokenizer's encoder"
            )
        b, _, t_ctx, h, w = context_codes_bcthw.shape
        if (
            len(future_grid) != 3
            or not all(isinstance(s, int) and s > 0 for s in future_grid)
            or tuple(future_grid[1:]) != (h, w)
        ):
            raise ConfigError(
                f"future_grid={future_grid!r} must be (Tf', {h}, {w}): positive ints with the "
                "context's spatial size"
            )
        p = cfg.patch
        if h % p or w % p:
            raise ConfigError(
                f"latent grid {h}x{w} is not divisible by the predictor's patch={p}: use a "
                "patch size that divides the tokenizer's latent height and width"
            )
        hp, wp = h // p, w // p  # patch grid
        t_fut = future_grid[0]
        n_fut = t_fut * hp * wp
        dtype, device = self.code_in.weight.dtype, self.code_in.weight.device

        ctx_bnc = _patchify(context_codes_bcthw.to(dtype), p)  # t-major order
        ctx_pos_nc = grid_positions((t_ctx, hp, wp), cfg.width, device=device)
        ctx_bnc = self.code_in(ctx_bnc) + ctx_pos_nc.to(dtype)
        fut_pos_nc = grid_positions((t_fut, hp, wp), cfg.width, t_offset=t_ctx, device=device)
        fut_bnc = (self.mask_token + fut_pos_nc.to(dtype)).expand(b, n_fut, cfg.width)
        tokens = [ctx_bnc, fut_bnc]
        if condition is not None:
            tokens.insert(0, self._condition_tokens(condition, b))

        x_bnc = self.drop(torch.cat(tokens, dim=1))
        for block in self.blocks:
            x_bnc = block(x_bnc)
        logits_bnc = self.head(self.norm_out(x_bnc[:, -n_fut:]))
        logits_bcthw = _unpatchify(logits_bnc, (t_fut, hp, wp), p)
        if self.copy_gain is not None:
            # Detached: the prior is a fixed path, so a trainable tokenizer (joint-i3d) is not
            # pulled towards codes that merely repeat; the transformer's path keeps its gradient.
            last_bc1hw = context_codes_bcthw[:, :, -1:].detach().to(dtype)  # broadcast over Tf'
            logits_bcthw = logits_bcthw + self.copy_gain.view(1, -1, 1, 1, 1) * last_bc1hw
        return logits_bcthw

    def _condition_tokens(self, condition_bnd: torch.Tensor, batch: int) -> torch.Tensor:
        """(B, N_cond, condition_dim) features -> (B, N_cond, width) tokens."""
        cfg = self.config
        if self.condition_in is None or self.condition_token is None:
            raise ConfigError(
                "a condition was given but the predictor has condition_dim=0: set "
                "condition_dim in its config"
            )
        if condition_bnd.dim() != 3 or tuple(condition_bnd.shape[::2]) != (
            batch,
            cfg.condition_dim,
        ):
            raise ConfigError(
                f"condition has shape {tuple(condition_bnd.shape)}: expected "
                f"({batch}, N_cond, {cfg.condition_dim})"
            )
        weight = self.condition_in.weight
        cond_bnc = self.condition_in(condition_bnd.to(weight.dtype)) + self.condition_token
        # Keeps several condition tokens (e.g. features per time step) apart from each other.
        index_n = torch.arange(condition_bnd.shape[1], device=weight.device)
        return cond_bnc + sinusoid_1d(index_n, cfg.width).to(weight.dtype)

    @torch.no_grad()
    def predict_codes(
        self,
        context_codes_bcthw: torch.Tensor,
        future_grid: tuple[int, int, int],
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Future codes (B, 18, Tf', H', W') in {-1, +1}; a logit of exactly 0 gives -1 (as LFQ)."""
        logits = self(context_codes_bcthw, future_grid, condition)
        return codes_from_logits(logits)

    def readout(self, logits: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """What the decoder gets for ``logits`` (B, 18, Tf', H', W'), per ``config.readout``
        (or ``mode``, one of the same names):
        codes (S, B, 18, Tf', H', W'), S >= 1 draws; the prediction is the mean of their
        decoded frames.

        "sign" (S = 1): the most likely code, +-1. "mean" (S = 1): the expected code under the
        predicted bit probabilities, 2 sigmoid(logit) - 1 for the bits loss (tanh(logit) for
        "mse", whose prediction is already a value in [-1, 1]). "samples" (S =
        ``readout_samples``): codes drawn bit by bit from those probabilities.

        For a pixel MSE/PSNR measure the best point estimate is the expected decoded frame.
        Where the predictor is unsure of a bit, the sign renders one guess at full contrast;
        the mean code is a value the decoder never saw in training (it decodes codes of +-1),
        so decoding it is not the expected frame. Averaging the decoded frames of drawn codes
        estimates that expectation with inputs the decoder knows.
        """
        mode = mode or self.config.readout
        if mode == "sign":
            return codes_from_logits(logits)[None]
        if mode == "mean":
            mean = torch.tanh(logits) if self.config.loss == "mse" else torch.tanh(logits / 2)
            return mean[None]  # tanh(logits / 2) = 2 sigmoid(logits) - 1
        return sample_codes(logits, self.config.readout_samples, loss=self.config.loss)


def _patchify(codes_bcthw: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T*(H/p)*(W/p), C*p*p) tokens, t-major, channels fastest."""
    b, c, t, h, w = codes_bcthw.shape
    x = codes_bcthw.reshape(b, c, t, h // p, p, w // p, p)
    return x.permute(0, 2, 3, 5, 4, 6, 1).reshape(b, t * (h // p) * (w // p), p * p * c)


def _unpatchify(tokens_bnd: torch.Tensor, grid: tuple[int, int, int], p: int) -> torch.Tensor:
    """Inverse of ``_patchify``: (B, T*Hp*Wp, p*p*C) -> (B, C, T, Hp*p, Wp*p)."""
    t, hp, wp = grid
    b = tokens_bnd.shape[0]
    x = tokens_bnd.reshape(b, t, hp, wp, p, p, -1)
    return x.permute(0, 6, 1, 2, 4, 3, 5).reshape(b, -1, t, hp * p, wp * p)


# ---------------------------------------------------------------------------------------------
# Functions every variant needs beside the model: codes from logits and the loss.


def sample_codes(logits: torch.Tensor, samples: int, *, loss: str = "bits") -> torch.Tensor:
    """``samples`` codes (S, *logits.shape) of +-1 drawn from the bit probabilities the logits
    give under ``loss`` ("bits": sigmoid(logit); "mse": (1 + tanh(logit)) / 2 for +1).

    Draws come in antithetic pairs (uniforms u and 1 - u), which lowers the variance of the
    averaged prediction for the same number of decodes, and from a generator seeded with
    ``READOUT_SEED``, so the same logits always give the same codes.
    """
    probability_plus = (
        (1 + torch.tanh(logits.float())) / 2 if loss == "mse" else torch.sigmoid(logits.float())
    )
    generator = torch.Generator(device=logits.device).manual_seed(READOUT_SEED)
    uniforms = torch.rand(((samples + 1) // 2, *logits.shape), generator=generator,
                          device=logits.device)
    uniforms = torch.cat([uniforms, 1 - uniforms])[:samples]
    one = torch.ones((), dtype=logits.dtype, device=logits.device)
    return torch.where(uniforms < probability_plus, one, -one)


def codes_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Sign of the logits as +-1 codes in the logits' dtype; 0 -> -1 like the LFQ quantizer."""
    one = torch.ones((), dtype=logits.dtype, device=logits.device)
    return torch.where(logits > 0, one, -one)


class LatentLoss(NamedTuple):
    loss: torch.Tensor  # scalar, differentiable
    bit_accuracy: torch.Tensor  # scalar in [0, 1], detached: share of bits whose sign is right


def latent_loss(
    logits: torch.Tensor, target_codes: torch.Tensor, kind: str = "bits"
) -> LatentLoss:
    """Loss between predicted logits and true +-1 codes, both (B, 18, T, H, W).

    "bits": binary cross-entropy per LFQ bit (target bit = code > 0), the default;
    "mse": mean squared error between tanh(logits) and the codes.
    """
    if logits.shape != target_codes.shape:
        raise ConfigError(
            f"logits {tuple(logits.shape)} and target codes {tuple(target_codes.shape)} "
            "differ in shape: predict the same future grid the targets were encoded on"
        )
    target_bits = (target_codes > 0).to(logits.dtype)
    if kind == "bits":
        loss = F.binary_cross_entropy_with_logits(logits, target_bits)
    elif kind == "mse":
        loss = F.mse_loss(torch.tanh(logits), target_codes.to(logits.dtype))
    else:
        raise ConfigError(f"latent loss kind={kind!r}: use one of {', '.join(LOSS_KINDS)}")
    with torch.no_grad():
        bit_accuracy = ((logits > 0) == (target_codes > 0)).float().mean()
    return LatentLoss(loss, bit_accuracy)

