"""3D ResNet building blocks in the pytorchvideo state_dict layout, and the I3D R50 built from them.

Design choices:
- Attribute names are the checkpoint's key names (``conv``/``norm`` stem, ``branch1_conv``,
  ``branch2.conv_a``..``norm_c``, ``res_blocks``), so the public pytorchvideo Kinetics-400
  files (SlowFast R50, I3D R50) load with ``strict=True`` into our own modules. Keyless parts
  (ReLU, pools, dropout) may be named freely.
- Every conv is bias-free and followed by a BatchNorm3d with PyTorch's defaults (eps 1e-5,
  momentum 0.1), as in those files.
- Bottlenecks are 1x1x1 (temporal k) -> 1x3x3 (spatial stride) -> 1x1x1; the temporal kernel
  of ``conv_a`` is per block, because I3D R50 alternates 3 and 1 within a stage.
- The classifier head is kept only so the files load strictly; features are taken before it
  with a global average, so any clip size works (the reference head's fixed pool sizes
  assume 224 px and a fixed frame count).

Shape legend: B batch, C channels, T frames, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from shared.errors import ConfigError


class ResNet3DStem(nn.Module):
    """conv (kt x 7 x 7, spatial stride 2) -> BN -> ReLU -> max pool 1x3x3 (spatial stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(temporal_kernel, 7, 7),
            stride=(1, 2, 2),
            padding=(temporal_kernel // 2, 3, 3),
            bias=False,
        )
        self.norm = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x_bcthw: Tensor) -> Tensor:
        # (B, C_in, T, H, W) -> (B, C_out, T, H/4, W/4)
        return self.pool(self.activation(self.norm(self.conv(x_bcthw))))


class BottleneckBranch(nn.Module):
    """The residual branch: a (k x 1 x 1), b (1 x 3 x 3, stride s), c (1 x 1 x 1) convs."""

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        temporal_kernel: int,
        spatial_stride: int,
    ) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(
            in_channels,
            inner_channels,
            kernel_size=(temporal_kernel, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            bias=False,
        )
        self.norm_a = nn.BatchNorm3d(inner_channels)
        self.conv_b = nn.Conv3d(
            inner_channels,
            inner_channels,
            kernel_size=(1, 3, 3),
            stride=(1, spatial_stride, spatial_stride),
            padding=(0, 1, 1),
            bias=False,
        )
        self.norm_b = nn.BatchNorm3d(inner_channels)
        self.conv_c = nn.Conv3d(inner_channels, out_channels, kernel_size=1, bias=False)
        self.norm_c = nn.BatchNorm3d(out_channels)

    def forward(self, x_bcthw: Tensor) -> Tensor:
        x = F.relu(self.norm_a(self.conv_a(x_bcthw)), inplace=True)
        x = F.relu(self.norm_b(self.conv_b(x)), inplace=True)
        return self.norm_c(self.conv_c(x))  # no ReLU before the residual sum


class BottleneckBlock(nn.Module):
    """ReLU(shortcut + branch2); the shortcut is a strided 1x1x1 projection when shapes change."""

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        temporal_kernel: int,
        spatial_stride: int,
    ) -> None:
        super().__init__()
        self.branch1_conv: nn.Conv3d | None = None
        self.branch1_norm: nn.BatchNorm3d | None = None
        if in_channels != out_channels or spatial_stride != 1:
            self.branch1_conv = nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size=1,
                stride=(1, spatial_stride, spatial_stride),
                bias=False,
            )
            self.branch1_norm = nn.BatchNorm3d(out_channels)
        self.branch2 = BottleneckBranch(
            in_channels,
            inner_channels,
            out_channels,
            temporal_kernel=temporal_kernel,
            spatial_stride=spatial_stride,
        )

    def forward(self, x_bcthw: Tensor) -> Tensor:
        shortcut = x_bcthw
        if self.branch1_conv is not None and self.branch1_norm is not None:
            shortcut = self.branch1_norm(self.branch1_conv(x_bcthw))
        return F.relu(shortcut + self.branch2(x_bcthw), inplace=True)


class ResStage(nn.Module):
    """``len(temporal_kernels)`` bottlenecks; only the first changes channels and resolution."""

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        *,
        temporal_kernels: tuple[int, ...],
        spatial_stride: int,
    ) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(
            BottleneckBlock(
                in_channels if j == 0 else out_channels,
                inner_channels,
                out_channels,
                temporal_kernel=k,
                spatial_stride=spatial_stride if j == 0 else 1,
            )
            for j, k in enumerate(temporal_kernels)
        )

    def forward(self, x_bcthw: Tensor) -> Tensor:
        for block in self.res_blocks:
            x_bcthw = block(x_bcthw)
        return x_bcthw


class ClassifierHead(nn.Module):
    """Dropout + ``proj``: the Kinetics classifier, kept for a strict load of the public files."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(in_features, num_classes)

    def forward(self, features_bc: Tensor) -> Tensor:
        return self.proj(self.dropout(features_bc))


# ---------------------------------------------------------------------------------------------
# I3D R50 (pytorchvideo ``i3d_r50``, Kinetics-400 I3D_8x8_R50.pyth): one pathway, 8 frames.


@dataclass(kw_only=True)
class I3DR50Config:
    depth_kernels: tuple[tuple[int, ...], ...] = (
        (3, 3, 3),
        (3, 1, 3, 1),
        (3, 1, 3, 1, 3, 1),
        (1, 3, 1),
    )  # conv_a temporal kernel of each block, per stage (res2..res5)
    stem_width: int = 64  # stem channels = res2 inner width; later stages double it
    stem_temporal_kernel: int = 5
    expansion: int = 4  # bottleneck out = inner * expansion
    num_classes: int = 400
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if len(self.depth_kernels) != 4 or not all(self.depth_kernels):
            raise ConfigError("I3DR50Config.depth_kernels needs 4 non-empty stages (res2..res5)")
        for name in ("stem_width", "stem_temporal_kernel", "expansion", "num_classes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"I3DR50Config.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def feature_dim(self) -> int:
        return self.stem_width * 8 * self.expansion


def _i3d_r50_kinetics400() -> I3DR50Config:
    return I3DR50Config()


def _i3d_r50_micro() -> I3DR50Config:
    return I3DR50Config(depth_kernels=((3,), (1,), (3,), (1,)), stem_width=4, num_classes=10)


I3D_R50_PRESETS: dict[str, Callable[[], I3DR50Config]] = {
    "kinetics400": _i3d_r50_kinetics400,
    "micro": _i3d_r50_micro,
}


class I3DR50(nn.Module):
    """``blocks`` = [stem, res2, temporal max pool (no keys), res3, res4, res5, head]."""

    def __init__(self, config: I3DR50Config) -> None:
        super().__init__()
        self.config = config
        width, expansion = config.stem_width, config.expansion
        stages: list[nn.Module] = []
        in_channels = width
        for i, kernels in enumerate(config.depth_kernels):
            inner = width * 2**i
            stages.append(
                ResStage(
                    in_channels,
                    inner,
                    inner * expansion,
                    temporal_kernels=kernels,
                    spatial_stride=1 if i == 0 else 2,
                )
            )
            in_channels = inner * expansion
        self.blocks = nn.ModuleList(
            [
                ResNet3DStem(3, width, config.stem_temporal_kernel),
                stages[0],
                nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1)),  # halves T after res2
                *stages[1:],
                ClassifierHead(config.feature_dim, config.num_classes, config.dropout),
            ]
        )

    def forward_features(self, video_bcthw: Tensor, *, time_resolved: bool = False) -> Tensor:
        """Normalised clip (B, 3, T, H, W) -> (B, 2048), or (B, T // 2, 2048) per time step."""
        x = video_bcthw
        for block in self.blocks[:-1]:
            x = block(x)
        x_bct = x.mean(dim=(3, 4))  # global spatial average replaces the fixed (4, 7, 7) pool
        return x_bct.transpose(1, 2) if time_resolved else x_bct.mean(dim=2)

    def forward(self, video_bcthw: Tensor) -> Tensor:
        """Normalised clip -> Kinetics logits (B, num_classes)."""
        return self.blocks[-1](self.forward_features(video_bcthw))
