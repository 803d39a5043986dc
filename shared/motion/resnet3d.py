"""3D ResNet building blocks in the pytorchvideo state_dict layout, for SlowFast R50.

Design choices:
- Attribute names are the checkpoint's key names (``conv``/``norm`` stem, ``branch1_conv``,
  ``branch2.conv_a``..``norm_c``, ``res_blocks``), so the public pytorchvideo Kinetics-400
  files load with ``strict=True`` into our own modules. Keyless parts (ReLU, pools, dropout)
  may be named freely.
- Every conv is bias-free and followed by a BatchNorm3d with PyTorch's defaults (eps 1e-5,
  momentum 0.1), as in those files (``conv_bn``).
- Bottlenecks are 1x1x1 (temporal k) -> 1x3x3 (spatial stride) -> 1x1x1; the temporal kernel
  of ``conv_a`` is given per block, as pytorchvideo's ResNets do (its I3D R50 alternates 3
  and 1 within a stage).
- The classifier head is kept only so the files load strictly; features are taken before it
  with a global average, so any clip size works (the reference head's fixed pool sizes
  assume 224 px and a fixed frame count).

Shape legend: B batch, C channels, T frames, H x W pixels.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

Size3 = int | tuple[int, int, int]  # a conv's kernel, stride or padding: (t, h, w) or all alike


def conv_bn(in_channels: int, out_channels: int, *, kernel: Size3, stride: Size3 = 1,
            padding: Size3 = 0) -> tuple[nn.Conv3d, nn.BatchNorm3d]:
    """A bias-free Conv3d and the BatchNorm3d after it: the unit every conv of these files is."""
    conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
    return conv, nn.BatchNorm3d(out_channels)


class ResNet3DStem(nn.Module):
    """conv (kt x 7 x 7, spatial stride 2) -> BN -> ReLU -> max pool 1x3x3 (spatial stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv, self.norm = conv_bn(in_channels, out_channels, kernel=(temporal_kernel, 7, 7),
                                       stride=(1, 2, 2), padding=(temporal_kernel // 2, 3, 3))
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
        self.conv_a, self.norm_a = conv_bn(in_channels, inner_channels,
                                           kernel=(temporal_kernel, 1, 1),
                                           padding=(temporal_kernel // 2, 0, 0))
        self.conv_b, self.norm_b = conv_bn(inner_channels, inner_channels, kernel=(1, 3, 3),
                                           stride=(1, spatial_stride, spatial_stride),
                                           padding=(0, 1, 1))
        self.conv_c, self.norm_c = conv_bn(inner_channels, out_channels, kernel=1)

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
            self.branch1_conv, self.branch1_norm = conv_bn(
                in_channels, out_channels, kernel=1, stride=(1, spatial_stride, spatial_stride))
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

