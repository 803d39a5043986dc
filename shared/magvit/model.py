"""Open-MAGVIT2 video tokenizer: config presets and modules (no training code).

Design choices (each one fixed by the official checkpoint, see the tokenizer reference notes):
- Every conv is a 3D conv wrapped in CausalConv3d, whose single child is called ``conv_1`` so the
  parameter names match the checkpoint. Padding is zeros: k-1 frames in front (none behind),
  k//2 pixels on each side in space; strides act after the padding.
- Encoder: conv_in, per level ``num_res_blocks`` ResBlocks (+ a stride-2 downsample conv except
  on the last level; it also halves time where ``time_downsample`` says so), mid ResBlocks,
  GroupNorm + SiLU, 1x1x1 conv to ``code_dim`` channels. No attention, no quant_conv.
- Decoder: conv_in, mid ResBlocks, then per level from the coarsest: adaptive GroupNorm
  modulated by the quantized latent, ResBlocks, and a depth-to-space upsampler that drops the
  2nd frame after a temporal doubling, so T' latent frames decode to 4T'-3 frames. Output is
  not clamped (the official scripts clamp afterwards).
- T frames give T' = ceil(T / 4) latent frames with the official two temporal halvings; T = 1 + 4k
  round-trips exactly. Latent frame t' sees input frames <= 4t' through the convolutions.
- The LFQ quantizer has no parameters, so the state_dict holds only ``encoder.*`` and
  ``decoder.*``: 283 tensors for the official config.
- Activation checkpointing is a switch on the module (``set_activation_checkpointing``), not
  a config field: it trades compute for memory in a training run and changes no number, while
  the config describes the architecture, is saved in every checkpoint and rebuilt from it.
  When on, and only while the module trains with grad enabled, every ResBlock, downsample
  conv, adaptive norm and upsampler keeps just its inputs and is recomputed in backward
  (``torch.utils.checkpoint``, non-reentrant), for one more forward pass of each. Measured
  for one fp32 forward + backward of the official tokenizer on one 17 x 128 x 128 clip on a
  CPU (weights and gradients 2.8 GiB of it): peak RSS 15.2 GiB without, 6.0 GiB with, the
  same loss, and the same 221 s on 2 cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from shared.errors import ConfigError, DataError
from shared.magvit.lfq import LFQ, MAX_CODE_DIM, indices_to_codes


@dataclass(kw_only=True)
class MagvitConfig:
    resolution: int = 128  # training clip height = width (pixels)
    num_frames: int = 17  # training clip length, 1 + 4k
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 4
    code_dim: int = 18  # LFQ bits per token, codebook 2^code_dim
    norm_groups: int = 32
    norm_eps: float = 1e-6
    # Per level except the last: does its downsample also halve time? None = official rule
    # (channel_mult[i] != 1). The decoder's level i + 1 upsampler doubles time iff level i halves.
    time_downsample: tuple[bool, ...] | None = None
    # Per level except the last: does its downsample halve height and width? None = every
    # level does (official). Small presets keep more latent positions by skipping one, since
    # at 32 px a 4x4-pixel latent cell cannot hold a frame's detail in 18 bits.
    space_downsample: tuple[bool, ...] | None = None
    # LFQ training terms (official values)
    entropy_temperature: float = 0.01
    sample_entropy_weight: float = 1.0
    codebook_entropy_weight: float = 1.0
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        # asdict() -> JSON -> MagvitConfig(**d) turns tuples into lists; take them back.
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.time_downsample is not None:
            self.time_downsample = tuple(bool(f) for f in self.time_downsample)
        if self.space_downsample is not None:
            self.space_downsample = tuple(bool(f) for f in self.space_downsample)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(f"channel_mult {self.channel_mult} must be positive integers")
        if self.base_channels < 1 or self.num_res_blocks < 1:
            raise ConfigError("base_channels and num_res_blocks must be >= 1")
        for width in {self.base_channels * m for m in self.channel_mult}:
            if width % self.norm_groups:
                raise ConfigError(
                    f"norm_groups {self.norm_groups} does not divide channel width {width}: "
                    "choose base_channels / norm_groups so that every level's width divides"
                )
        if not 1 <= self.code_dim <= MAX_CODE_DIM:
            raise ConfigError(f"code_dim {self.code_dim} must be in 1..{MAX_CODE_DIM}")
        for name in ("time_downsample", "space_downsample"):
            flags = getattr(self, name)
            if flags is not None and len(flags) != self.num_levels - 1:
                raise ConfigError(
                    f"{name} needs one flag per level but the last "
                    f"({self.num_levels - 1}), got {len(flags)}"
                )
        if not all(t or s for t, s in zip(self.level_time_downsample,
                                          self.level_space_downsample, strict=True)):
            raise ConfigError("every level but the last must halve time, space or both")
        if self.resolution % self.spatial_factor:
            raise ConfigError(
                f"resolution {self.resolution} is not divisible by the spatial factor "
                f"{self.spatial_factor}"
            )

    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def level_time_downsample(self) -> tuple[bool, ...]:
        if self.time_downsample is not None:
            return self.time_downsample
        return tuple(m != 1 for m in self.channel_mult[:-1])

    @property
    def level_space_downsample(self) -> tuple[bool, ...]:
        if self.space_downsample is not None:
            return self.space_downsample
        return (True,) * (self.num_levels - 1)

    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.level_space_downsample)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.level_time_downsample)

    @property
    def codebook_size(self) -> int:
        return 2**self.code_dim


def official_config() -> MagvitConfig:
    """The released UCF-101 tokenizer: 128 px, 17 frames, 8x spatial, 4x temporal, 2^18 codes."""
    return MagvitConfig(name="official")


def tiny_config() -> MagvitConfig:
    """CPU-trainable in minutes: 32 px, 17 frames, 2x spatial and 4x temporal, 2^18 codes.

    Three levels (widths 16, 32, 32), one ResBlock each; both downsamples halve time, only the
    first halves space, so a 17 x 32 x 32 clip becomes 5 x 16 x 16 tokens. ~0.69 M parameters.
    Not 4x spatial: at 32 px a 4 x 4-pixel cell is too coarse (README, "Results so far").
    """
    return MagvitConfig(
        name="tiny",
        resolution=32,
        num_frames=17,
        base_channels=16,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        norm_groups=8,
        time_downsample=(True, True),
        space_downsample=(True, False),
    )


def micro_config() -> MagvitConfig:
    """For tests and gates: 16 px, 9 frames, ~0.2 M parameters, same factors as tiny."""
    return MagvitConfig(
        name="micro",
        resolution=16,
        num_frames=9,
        base_channels=8,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        norm_groups=4,
        time_downsample=(True, True),
    )


TOKENIZER_CONFIGS: dict[str, Callable[[], MagvitConfig]] = {
    "official": official_config,
    "tiny": tiny_config,
    "micro": micro_config,
}


def tokenizer_config(name: str) -> MagvitConfig:
    if name not in TOKENIZER_CONFIGS:
        raise ConfigError(
            f"unknown tokenizer preset {name!r}: choose one of {', '.join(TOKENIZER_CONFIGS)}"
        )
    return TOKENIZER_CONFIGS[name]()


# --------------------------------------------------------------------------------------------
# Blocks


def norm(config: MagvitConfig, channels: int, *, affine: bool = True) -> nn.GroupNorm:
    # Statistics pool over the whole clip (C/G, T, H, W), as in the official model.
    return nn.GroupNorm(config.norm_groups, channels, eps=config.norm_eps, affine=affine)


class CausalConv3d(nn.Module):
    """Conv3d with zero padding only in the past along time; the conv lives in ``conv_1``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        bias: bool = True,
    ) -> None:
        super().__init__()
        k = kernel_size
        # F.pad order: (W left, W right, H top, H bottom, T front, T back)
        self.padding = (k // 2, k // 2, k // 2, k // 2, k - 1, 0)
        self.conv_1 = nn.Conv3d(in_channels, out_channels, k, stride=stride, bias=bias)

    def forward(self, x_bcthw: Tensor) -> Tensor:
        return self.conv_1(F.pad(x_bcthw, self.padding))


class ResBlock(nn.Module):
    def __init__(self, config: MagvitConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Registration order = the official key order (norm1, norm2, conv1, conv2, shortcut).
        self.norm1 = norm(config, in_channels)
        self.norm2 = norm(config, out_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False)
        self.nin_shortcut = (
            CausalConv3d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AdaptiveGroupNorm(nn.Module):
    """Affine-free GroupNorm scaled by gamma(std of z_q) and shifted by beta(mean of z_q).

    The style statistics are per sample and latent channel over all latent positions; the std
    uses the unbiased variance + 1e-6, as the official code does.
    """

    def __init__(self, config: MagvitConfig, channels: int) -> None:
        super().__init__()
        self.gn = norm(config, channels, affine=False)
        self.gamma = nn.Linear(config.code_dim, channels)
        self.beta = nn.Linear(config.code_dim, channels)

    def forward(self, x_bcthw: Tensor, zq_bdthw: Tensor) -> Tensor:
        flat = zq_bdthw.flatten(2)  # (B, d, T'H'W')
        # With a single latent position the unbiased variance is 0/0 (NaN in the official
        # code); fall back to the biased one there.
        correction = 1 if flat.shape[-1] > 1 else 0
        std = (flat.var(dim=-1, correction=correction) + 1e-6).sqrt()  # (B, d)
        mean = flat.mean(dim=-1)  # (B, d)
        scale = self.gamma(std)[:, :, None, None, None]  # (B, C, 1, 1, 1)
        shift = self.beta(mean)[:, :, None, None, None]
        return self.gn(x_bcthw) * scale + shift


class Upsampler(nn.Module):
    """Causal conv to C * bt*bh*bw channels, depth-to-space, then drop frame 1 if time doubled."""

    def __init__(self, channels: int, *, upsample_time: bool, upsample_space: bool = True) -> None:
        super().__init__()
        space = 2 if upsample_space else 1
        self.factors = (2 if upsample_time else 1, space, space)
        bt, bh, bw = self.factors
        self.conv1 = CausalConv3d(channels, channels * bt * bh * bw, 3)

    def forward(self, x_bcthw: Tensor) -> Tensor:
        bt, bh, bw = self.factors
        h = self.conv1(x_bcthw)
        b, _, t, hh, ww = h.shape
        # Channels split as (bt, bh, bw, C) with C fastest.
        h = h.view(b, bt, bh, bw, -1, t, hh, ww).permute(0, 4, 5, 1, 6, 2, 7, 3)
        h = h.reshape(b, -1, t * bt, hh * bh, ww * bw)
        if bt > 1:
            # The first latent frame stands for one input frame, not two: T' -> 2T' - 1.
            h = torch.cat([h[:, :, :1], h[:, :, 2:]], dim=2)
        return h


class DownLevel(nn.Module):
    def __init__(self, blocks: list[ResBlock], downsample: CausalConv3d | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if downsample is not None:  # the last level has no attribute at all, like the original
            self.downsample = downsample


class UpLevel(nn.Module):
    def __init__(self, blocks: list[ResBlock], upsample: Upsampler | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if upsample is not None:
            self.upsample = upsample


def _widths(config: MagvitConfig) -> list[int]:
    return [config.base_channels * m for m in config.channel_mult]


class _Checkpointed(nn.Module):
    """Base of Encoder and Decoder: ``self.run(block, *inputs)`` recomputes ``block`` in
    backward when ``checkpoint_blocks`` is on, the module trains and grad is enabled."""

    checkpoint_blocks = False

    def run(self, block: nn.Module, *inputs: Tensor) -> Tensor:
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            # The blocks draw no random numbers, so there is no RNG state to replay.
            return torch.utils.checkpoint.checkpoint(  # type: ignore[no-any-return]
                block, *inputs, use_reentrant=False, preserve_rng_state=False
            )
        return block(*inputs)


class Encoder(_Checkpointed):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = _widths(config)
        ch = config.base_channels
        self.conv_in = CausalConv3d(config.in_channels, ch, 3, bias=False)
        self.down = nn.ModuleList()
        for level, width in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(config, ch, width))
                ch = width
            downsample = None
            if level < config.num_levels - 1:
                space = 2 if config.level_space_downsample[level] else 1
                stride = (2 if config.level_time_downsample[level] else 1, space, space)
                downsample = CausalConv3d(ch, ch, 3, stride=stride)
            self.down.append(DownLevel(blocks, downsample))
        self.mid_block = nn.ModuleList(
            ResBlock(config, ch, ch) for _ in range(config.num_res_blocks)
        )
        self.norm_out = norm(config, ch)
        self.conv_out = CausalConv3d(ch, config.code_dim, 1)

    def forward(self, video_bcthw: Tensor) -> Tensor:
        h = self.conv_in(video_bcthw)
        for level in self.down:
            for block in level.block:
                h = self.run(block, h)
            if hasattr(level, "downsample"):
                h = self.run(level.downsample, h)
        for block in self.mid_block:
            h = self.run(block, h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, d, T', H', W')


class Decoder(_Checkpointed):
    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        widths = _widths(config)
        ch = widths[-1]
        self.conv_in = CausalConv3d(config.code_dim, ch, 3)
        self.mid_block = nn.ModuleList(
            ResBlock(config, ch, ch) for _ in range(config.num_res_blocks)
        )
        # Built from the coarsest level down, stored by level index (up[0] = full resolution).
        ups: list[UpLevel] = []
        adaptive: list[AdaptiveGroupNorm] = []
        for level in reversed(range(config.num_levels)):
            adaptive.append(AdaptiveGroupNorm(config, ch))
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(config, ch, widths[level]))
                ch = widths[level]
            upsample = None
            if level > 0:
                upsample = Upsampler(ch, upsample_time=config.level_time_downsample[level - 1],
                                     upsample_space=config.level_space_downsample[level - 1])
            ups.append(UpLevel(blocks, upsample))
        self.up = nn.ModuleList(reversed(ups))
        self.adaptive = nn.ModuleList(reversed(adaptive))
        self.norm_out = norm(config, ch)
        self.conv_out = CausalConv3d(ch, config.out_channels, 3)

    def forward(self, zq_bdthw: Tensor) -> Tensor:
        h = self.conv_in(zq_bdthw)
        for block in self.mid_block:
            h = self.run(block, h)
        for level in reversed(range(len(self.up))):
            h = self.run(self.adaptive[level], h, zq_bdthw)
            up = self.up[level]
            for block in up.block:
                h = self.run(block, h)
            if hasattr(up, "upsample"):
                h = self.run(up.upsample, h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, 4T'-3, H, W), unclamped


# --------------------------------------------------------------------------------------------
# Tokenizer


@dataclass
class TokenizerOutput:
    reconstruction: Tensor  # (B, 3, T_out, H, W), unclamped
    latent: Tensor  # (B, d, T', H', W') encoder output before quantization
    codes: Tensor  # (B, d, T', H', W') +-1, straight-through
    indices: Tensor  # (B, T', H', W') int64
    entropy_loss: Tensor  # scalar, zero in eval mode
    commitment_loss: Tensor  # scalar, zero in eval mode
    per_sample_entropy: Tensor
    codebook_entropy: Tensor


class MagvitTokenizer(nn.Module):
    """Encoder + LFQ + decoder. Its state_dict has the official ``encoder.*``/``decoder.*`` keys."""

    def __init__(self, config: MagvitConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = LFQ(
            dim=config.code_dim,
            temperature=config.entropy_temperature,
            sample_entropy_weight=config.sample_entropy_weight,
            codebook_entropy_weight=config.codebook_entropy_weight,
        )

    def set_activation_checkpointing(self, enabled: bool = True) -> MagvitTokenizer:
        """Recompute the encoder's and decoder's blocks in backward instead of storing their
        activations (training with grad only; same outputs and gradients). Returns self."""
        self.encoder.checkpoint_blocks = enabled
        self.decoder.checkpoint_blocks = enabled
        return self

    @property
    def checkpoints_activations(self) -> bool:
        return self.encoder.checkpoint_blocks and self.decoder.checkpoint_blocks

    def latent_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(T', H', W') of the latent of a ``frames`` x ``height`` x ``width`` clip."""
        s = self.config.spatial_factor
        if frames < 1 or height % s or width % s or height < s or width < s:
            raise DataError(
                f"a {frames}x{height}x{width} clip cannot be tokenized: need >= 1 frame and "
                f"height/width positive multiples of {s}"
            )
        return math.ceil(frames / self.config.temporal_factor), height // s, width // s

    def decoded_frames(self, latent_frames: int) -> int:
        """Frames produced by decoding ``latent_frames`` latent frames (1 + f (T' - 1))."""
        return 1 + self.config.temporal_factor * (latent_frames - 1)

    def encode_latent(self, video: Tensor) -> Tensor:
        """Continuous encoder output (B, d, T', H', W') of ``video`` (B, 3, T, H, W) in [-1, 1]."""
        if video.dim() != 5 or video.shape[1] != self.config.in_channels:
            raise DataError(
                f"video of shape {tuple(video.shape)} is not (B, {self.config.in_channels}, "
                "T, H, W): move the channel axis to dim 1"
            )
        self.latent_grid(*video.shape[2:])
        return self.encoder(video)

    def encode(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Tokenize ``video`` (B, 3, T, H, W) in [-1, 1] -> (codes, indices).

        codes: (B, d, T', H', W') with values exactly +-1 (straight-through gradient if grad is
        on); indices: (B, T', H', W') int64, sum_c [code_c > 0] 2^c; ``indices.flatten()`` is the
        official flat order. T' = ceil(T / 4) for the presets.

        Causality: every conv is causal in time (latent frame t' is computed from input frames
        <= 4 t' only), but GroupNorm pools its statistics over the whole clip, so a latent frame
        depends slightly on later frames. To predict the future without leakage, encode the
        context frames on their own.
        """
        codes, indices = self.quantize.quantize(self.encode_latent(video))
        return codes, indices

    def decode(self, codes: Tensor) -> Tensor:
        """Codes (B, d, T', H', W') -> frames (B, 3, 4T'-3, H' s, W' s), not clamped."""
        if codes.dim() != 5 or codes.shape[1] != self.config.code_dim:
            raise DataError(
                f"codes of shape {tuple(codes.shape)} are not (B, {self.config.code_dim}, T', H', "
                "W'): use tok.indices_to_codes for indices"
            )
        return self.decoder(codes)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(B, T', H', W') int64 -> (B, d, T', H', W') +-1 float32."""
        return indices_to_codes(indices, self.config.code_dim, dim=1)

    def forward(self, video: Tensor) -> TokenizerOutput:
        latent = self.encode_latent(video)
        q = self.quantize(latent)
        return TokenizerOutput(
            reconstruction=self.decoder(q.codes),
            latent=latent,
            codes=q.codes,
            indices=q.indices,
            entropy_loss=q.entropy_loss,
            commitment_loss=q.commitment_loss,
            per_sample_entropy=q.per_sample_entropy,
            codebook_entropy=q.codebook_entropy,
        )
