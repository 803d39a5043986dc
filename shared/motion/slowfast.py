"""SlowFast R50 (Feichtenhofer et al. 2019) in the layout of pytorchvideo's Kinetics-400 file.

Design choices:
- Our own modules whose state_dict keys and shapes are those of ``SLOWFAST_8x8_R50.pyth``
  (``model_state``: 662 keys, 34,566,488 parameters), so the public file loads with
  ``strict=True``; pytorchvideo itself does not import on this torch stack.
- Two pathways over one clip: fast = 32 frames with 1/beta = 1/8 of the channels, slow = 8
  frames (every alpha = 4th fast frame). After the stem and res2..res4 a time-strided
  conv (7x1x1, stride alpha) maps fast to slow time and its output is concatenated after
  the slow channels.
- Features are the 2304 = 2048 (slow) + 256 (fast) channels before the classifier, averaged
  globally per pathway. The reference head instead pools fixed (8, 7, 7) / (32, 7, 7)
  windows, which only fit 8/32 frames at 224 px; there the two are identical, and the
  global average makes small test clips work too. The classifier stays for strict loading.
- ``SlowFastFeatures`` owns the input conventions: [-1, 1] RGB in, frames picked (never
  blended) for both pathways, optional short-side resize + centre crop, then the
  checkpoint's [0, 1] range and mean/std (0.45, 0.225).

Shape legend: B batch, C channels, T frames, H x W pixels; Ts / Tf slow / fast frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from os import PathLike, fspath
from typing import Literal

import torch
from torch import Tensor, nn

from shared.checkpoint import load_strict, read_checkpoint
from shared.errors import CheckpointError, ConfigError
from shared.motion.inputs import (
    check_model_range,
    check_video,
    resize_and_crop,
    select_frames,
    unit_range,
)
from shared.motion.resnet3d import ClassifierHead, ResNet3DStem, ResStage, conv_bn

SlowSelection = Literal["stride", "linspace"]


@dataclass(kw_only=True)
class SlowFastConfig:
    # Architecture: these fields fix the checkpoint's keys and shapes.
    depths: tuple[int, ...] = (3, 4, 6, 3)  # bottlenecks in res2..res5
    stem_width: int = 64  # slow stem channels = res2 inner width; later stages double it
    expansion: int = 4  # bottleneck out = inner * expansion
    beta_inv: int = 8  # fast pathway channels = slow channels / beta_inv
    alpha: int = 4  # fast frames per slow frame; the lateral convs' temporal stride
    fusion_kernel: int = 7  # temporal kernel of the fast -> slow lateral convs
    fusion_channel_ratio: int = 2  # lateral conv out channels = fast channels * ratio
    slow_stem_temporal_kernel: int = 1
    fast_stem_temporal_kernel: int = 5
    slow_temporal_kernels: tuple[int, ...] = (1, 1, 3, 3)  # conv_a per stage: no time in res2-3
    fast_temporal_kernels: tuple[int, ...] = (3, 3, 3, 3)
    num_classes: int = 400
    dropout: float = 0.5
    # Input conventions of SlowFastFeatures (no keys).
    fast_frames: int = 32  # the slow pathway gets fast_frames // alpha of them
    image_size: int | None = None  # short side resize + centre crop; None keeps the clip's size
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)  # of [0, 1] RGB
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    # "stride": fast frames 0, alpha, 2 alpha, ... (centred on the lateral convs' taps);
    # "linspace": linspace(0, Tf - 1, Tf // alpha), the packing pytorchvideo trained with.
    slow_selection: SlowSelection = "stride"

    def __post_init__(self) -> None:
        positive = (
            "stem_width",
            "expansion",
            "beta_inv",
            "alpha",
            "fusion_kernel",
            "fusion_channel_ratio",
            "slow_stem_temporal_kernel",
            "fast_stem_temporal_kernel",
            "num_classes",
            "fast_frames",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"SlowFastConfig.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.depths) != 4 or min(self.depths) < 1:
            raise ConfigError(f"SlowFastConfig.depths needs 4 stages >= 1, got {self.depths}")
        for name in ("slow_temporal_kernels", "fast_temporal_kernels"):
            kernels = getattr(self, name)
            if len(kernels) != 4 or min(kernels) < 1:
                raise ConfigError(f"SlowFastConfig.{name} needs 4 kernels >= 1, got {kernels}")
        if self.stem_width % self.beta_inv:
            raise ConfigError(
                f"SlowFastConfig.stem_width ({self.stem_width}) must be a multiple of "
                f"beta_inv ({self.beta_inv}) so the fast pathway has whole channels"
            )
        if self.fusion_kernel % 2 == 0:
            raise ConfigError(f"SlowFastConfig.fusion_kernel must be odd, got {self.fusion_kernel}")
        if self.fast_frames % self.alpha:
            raise ConfigError(
                f"SlowFastConfig.fast_frames ({self.fast_frames}) must be a multiple of "
                f"alpha ({self.alpha})"
            )
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(
                f"SlowFastConfig.image_size must be >= 1 or None, got {self.image_size}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("SlowFastConfig.mean and .std need 3 values each, std > 0")
        if self.slow_selection not in ("stride", "linspace"):
            raise ConfigError(
                f"SlowFastConfig.slow_selection must be 'stride' or 'linspace', "
                f"got {self.slow_selection!r}"
            )

    @property
    def slow_frames(self) -> int:
        return self.fast_frames // self.alpha

    @property
    def slow_feature_dim(self) -> int:
        return self.stem_width * 8 * self.expansion  # res5 inner = stem_width * 2**3

    @property
    def fast_feature_dim(self) -> int:
        return self.slow_feature_dim // self.beta_inv

    @property
    def feature_dim(self) -> int:
        return self.slow_feature_dim + self.fast_feature_dim


def _kinetics400() -> SlowFastConfig:
    """pytorchvideo ``slowfast_r50``, SLOWFAST_8x8_R50.pyth: 8 slow / 32 fast frames, 224 px."""
    return SlowFastConfig()


def _micro() -> SlowFastConfig:
    """Tests only: one block per stage, 1/4 of the width; same wiring, different shapes."""
    return SlowFastConfig(
        depths=(1, 1, 1, 1), stem_width=16, beta_inv=4, num_classes=10, fast_frames=8
    )


def _tiny() -> SlowFastConfig:
    """The ``tiny`` study (9 context frames at 32 px), pretrained on the 4 trajectory classes by
    ``shared.motion.pretrain``: half the official width (same beta), one block per stage, 8
    fast / 2 slow frames. Features: 1024 slow + 128 fast = 1152."""
    return SlowFastConfig(
        depths=(1, 1, 1, 1), stem_width=32, beta_inv=8, num_classes=4, fast_frames=8
    )


SLOWFAST_PRESETS: dict[str, Callable[[], SlowFastConfig]] = {
    "kinetics400": _kinetics400,
    "micro": _micro,
    "tiny": _tiny,
}


def slowfast_config(name: str, **overrides: object) -> SlowFastConfig:
    """A preset by name, with optional field overrides (e.g. ``image_size=224``)."""
    if name not in SLOWFAST_PRESETS:
        raise ConfigError(
            f"unknown SlowFast preset {name!r}: choose one of {', '.join(SLOWFAST_PRESETS)}"
        )
    try:
        return replace(SLOWFAST_PRESETS[name](), **overrides)  # type: ignore[arg-type]
    except TypeError as error:  # an unknown field name
        raise ConfigError(f"bad SlowFast override for preset {name!r}: {error}") from None


def slow_frame_indices(config: SlowFastConfig) -> Tensor:
    """Indices into the fast pathway's frames that make the slow pathway (Ts = Tf / alpha)."""
    if config.slow_selection == "linspace":
        return torch.linspace(0, config.fast_frames - 1, config.slow_frames).long()
    return torch.arange(0, config.fast_frames, config.alpha)


# ---------------------------------------------------------------------------------------------
# Modules. Each blocks.i takes and returns the list [slow_bcthw, fast_bcthw].


class FastToSlowFusion(nn.Module):
    """Lateral connection: fast (B, C, Tf, H, W) -> conv stride alpha in time -> BN -> ReLU,
    concatenated after the slow channels; the fast tensor passes on unchanged."""

    def __init__(self, fast_channels: int, *, channel_ratio: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv_fast_to_slow, self.norm = conv_bn(
            fast_channels, fast_channels * channel_ratio, kernel=(kernel, 1, 1),
            stride=(alpha, 1, 1), padding=(kernel // 2, 0, 0))
        self.activation = nn.ReLU(inplace=True)

    def forward(self, pathways: list[Tensor]) -> list[Tensor]:
        slow_bcthw, fast_bcthw = pathways
        lateral_bcthw = self.activation(self.norm(self.conv_fast_to_slow(fast_bcthw)))  # T: Ts
        return [torch.cat([slow_bcthw, lateral_bcthw], dim=1), fast_bcthw]


class MultiPathwayStage(nn.Module):
    """One module per pathway (slow first), then the lateral fusion (Identity after res5)."""

    def __init__(self, slow: nn.Module, fast: nn.Module, fusion: nn.Module | None) -> None:
        super().__init__()
        self.multipathway_blocks = nn.ModuleList([slow, fast])
        self.multipathway_fusion = fusion if fusion is not None else nn.Identity()

    def forward(self, pathways: list[Tensor]) -> list[Tensor]:
        pathways = [block(x) for block, x in zip(self.multipathway_blocks, pathways, strict=True)]
        return self.multipathway_fusion(pathways)


class PathwayPool(nn.Module):
    """blocks.5 (no keys): global average per pathway, slow channels first.

    Replaces the reference's fixed AvgPool3d (8, 7, 7) / (32, 7, 7) windows so that any clip
    size works; at 8/32 frames and 224 px both are the same mean.
    """

    def forward(self, pathways: list[Tensor], *, time_resolved: bool = False) -> Tensor:
        slow_bct = pathways[0].mean(dim=(3, 4))
        fast_bct = pathways[1].mean(dim=(3, 4))
        if not time_resolved:
            return torch.cat([slow_bct.mean(dim=2), fast_bct.mean(dim=2)], dim=1)  # (B, C)
        # Average each run of alpha fast steps onto its slow step: (B, Cf, Tf) -> (B, Cf, Ts).
        fast_bct = nn.functional.adaptive_avg_pool1d(fast_bct, slow_bct.shape[2])
        return torch.cat([slow_bct, fast_bct], dim=1).transpose(1, 2)  # (B, Ts, C)


class SlowFastR50(nn.Module):
    """``blocks`` = [stems + fusion, res2..res4 + fusion, res5, pool, head]; inputs normalised."""

    def __init__(self, config: SlowFastConfig) -> None:
        super().__init__()
        self.config = config
        c = config

        def fusion(fast_channels: int) -> FastToSlowFusion:
            return FastToSlowFusion(
                fast_channels,
                channel_ratio=c.fusion_channel_ratio,
                kernel=c.fusion_kernel,
                alpha=c.alpha,
            )

        slow_width, fast_width = c.stem_width, c.stem_width // c.beta_inv
        blocks: list[nn.Module] = [
            MultiPathwayStage(
                ResNet3DStem(3, slow_width, c.slow_stem_temporal_kernel),
                ResNet3DStem(3, fast_width, c.fast_stem_temporal_kernel),
                fusion(fast_width),
            )
        ]
        slow_in, fast_in = slow_width + fast_width * c.fusion_channel_ratio, fast_width
        for i, depth in enumerate(c.depths):
            inner = c.stem_width * 2**i
            out = inner * c.expansion
            fast_out = out // c.beta_inv
            stride = 1 if i == 0 else 2
            last = i == len(c.depths) - 1
            blocks.append(
                MultiPathwayStage(
                    ResStage(
                        slow_in,
                        inner,
                        out,
                        temporal_kernels=(c.slow_temporal_kernels[i],) * depth,
                        spatial_stride=stride,
                    ),
                    ResStage(
                        fast_in,
                        inner // c.beta_inv,
                        fast_out,
                        temporal_kernels=(c.fast_temporal_kernels[i],) * depth,
                        spatial_stride=stride,
                    ),
                    None if last else fusion(fast_out),
                )
            )
            slow_in = out + (0 if last else fast_out * c.fusion_channel_ratio)
            fast_in = fast_out
        blocks.append(PathwayPool())
        blocks.append(ClassifierHead(c.feature_dim, c.num_classes, c.dropout))
        self.blocks = nn.ModuleList(blocks)

    def forward_features(
        self, slow_bcthw: Tensor, fast_bcthw: Tensor, *, time_resolved: bool = False
    ) -> Tensor:
        """Normalised pathways (B, 3, Ts, H, W), (B, 3, alpha*Ts, H, W) -> (B, 2304), or
        (B, Ts, 2304) per slow time step when ``time_resolved``."""
        num_slow, num_fast = slow_bcthw.shape[2], fast_bcthw.shape[2]
        if num_fast != self.config.alpha * num_slow:
            raise ConfigError(
                f"SlowFastR50 needs alpha={self.config.alpha} fast frames per slow frame, got "
                f"{num_slow} slow and {num_fast} fast: feed whole clips through SlowFastFeatures"
            )
        pathways = [slow_bcthw, fast_bcthw]
        for stage in self.blocks[:5]:
            pathways = stage(pathways)
        pool: PathwayPool = self.blocks[5]  # type: ignore[assignment]
        return pool(pathways, time_resolved=time_resolved)

    def forward(self, slow_bcthw: Tensor, fast_bcthw: Tensor) -> Tensor:
        """Normalised pathways -> Kinetics logits (B, num_classes)."""
        return self.blocks[6](self.forward_features(slow_bcthw, fast_bcthw))


class SlowFastFeatures(nn.Module):
    """Project video (B, 3, T, H, W) in [-1, 1] -> SlowFast features (B, 2304), or
    (B, Ts, 2304) with ``time_resolved``.

    ``frozen`` (the default) turns off the backbone's gradients and keeps it in eval mode even
    when a parent module calls ``.train()``, so BatchNorm statistics never move; gradients
    still flow to the input video if it requires them.
    """

    def __init__(
        self, backbone: SlowFastR50, *, frozen: bool = True, time_resolved: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.frozen = frozen
        self.time_resolved = time_resolved
        if frozen:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> SlowFastFeatures:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def pathways(self, video_bcthw: Tensor) -> tuple[Tensor, Tensor]:
        """[-1, 1] clip -> normalised (slow (B, 3, Ts, H', W'), fast (B, 3, Tf, H', W'))."""
        check_video(video_bcthw, who="SlowFastFeatures")
        check_model_range(video_bcthw, who="SlowFastFeatures")
        c = self.config
        fast_bcthw = select_frames(video_bcthw, c.fast_frames)  # repeats frames of short clips
        if c.image_size is not None:
            fast_bcthw = resize_and_crop(fast_bcthw, c.image_size)
        mean = fast_bcthw.new_tensor(c.mean).view(1, 3, 1, 1, 1)
        std = fast_bcthw.new_tensor(c.std).view(1, 3, 1, 1, 1)
        fast_bcthw = (unit_range(fast_bcthw) - mean) / std
        slow_bcthw = fast_bcthw.index_select(2, slow_frame_indices(c).to(fast_bcthw.device))
        return slow_bcthw, fast_bcthw

    def forward(self, video_bcthw: Tensor) -> Tensor:
        slow_bcthw, fast_bcthw = self.pathways(video_bcthw)
        return self.backbone.forward_features(
            slow_bcthw, fast_bcthw, time_resolved=self.time_resolved
        )


# ---------------------------------------------------------------------------------------------
# Loading the public file (or any file in its layout).


def model_state_dict(payload: object, source: str) -> dict[str, Tensor]:
    """The weights in a pytorchvideo ``.pyth`` wrapper (``model_state``; ``epoch``,
    ``optimizer_state``, ``cfg`` are ignored) or a bare state dict; a DataParallel
    ``module.`` prefix is stripped."""
    if isinstance(payload, Mapping) and "model_state" in payload:
        state = payload["model_state"]
        if not _is_state_dict(state):
            raise CheckpointError(
                f"{source}: 'model_state' is a {type(state).__name__}, not a dict of tensors: "
                "re-save it with torch.save({'model_state': model.state_dict()}, path)"
            )
    elif _is_state_dict(payload):
        state = payload
    else:
        if isinstance(payload, Mapping):
            keys = ", ".join(map(str, list(payload)[:8])) or "nothing"
            found = f"a dict with keys {keys}"
        else:
            found = f"a {type(payload).__name__}"
        raise CheckpointError(
            f"{source} holds {found}, neither a 'model_state' entry nor a bare state dict: "
            "pass a pytorchvideo .pyth file or a saved model.state_dict()"
        )
    assert isinstance(state, Mapping)
    if state and all(str(key).startswith("module.") for key in state):
        state = {str(key)[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def _is_state_dict(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(key, str) and isinstance(v, Tensor) for key, v in value.items())
    )


def load_slowfast(
    source: str | PathLike[str], *, config: SlowFastConfig | str = "kinetics400"
) -> SlowFastR50:
    """Build SlowFast R50 from a local path or ``hf://OWNER/REPO/FILE`` and load it strictly;
    returned in eval mode. Wrap it in ``SlowFastFeatures`` for project video."""
    if isinstance(config, str):
        config = slowfast_config(config)
    state_dict = model_state_dict(read_checkpoint(source), fspath(source))
    # Built on meta and allocated uninitialised: the strict load overwrites every tensor, so
    # the 34 M random inits would be wasted work.
    with torch.device("meta"):
        model = SlowFastR50(config)
    model.to_empty(device="cpu")
    load_strict(model, state_dict, fspath(source))
    return model.eval()
