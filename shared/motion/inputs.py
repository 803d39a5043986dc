"""Input conventions shared by the motion backbones.

The project's videos are float tensors laid out (B, C, T, H, W) with values in [-1, 1] (the
tokenizer's range). A backbone adapts them with the helpers below:

* Frame counts change only by picking whole frames (evenly spaced indices, repeating frames
  when the clip is shorter than asked). Frames are never blended in time: a blended frame is
  a double exposure that no backbone saw in training, and interpolating a 5-D tensor in time
  is also what crashed the earlier attempt.
* Spatial resizing is an image operation, done per frame by folding T into the batch.
* Values are checked against the expected range, so a [0, 255] or [0, 1] clip fails loudly
  instead of giving quietly wrong features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.errors import ConfigError

MODEL_RANGE = (-1.0, 1.0)

# A decoded frame may overshoot [-1, 1] a little; beyond this slack the clip is in another range.
RANGE_SLACK = 0.5


def check_video(video_bcthw: torch.Tensor, *, min_frames: int = 1, who: str = "backbone") -> None:
    """Raise ConfigError unless ``video_bcthw`` is a float (B, 3, T, H, W) clip of >= min_frames."""
    if video_bcthw.dim() != 5 or video_bcthw.shape[1] != 3:
        raise ConfigError(
            f"{who} expects RGB video shaped (B, 3, T, H, W), got {tuple(video_bcthw.shape)}: "
            "permute a (B, T, C, H, W) clip with .permute(0, 2, 1, 3, 4)"
        )
    if not video_bcthw.is_floating_point():
        raise ConfigError(
            f"{who} expects a float video in [-1, 1], got {video_bcthw.dtype}: "
            "convert uint8 frames with x.float() / 127.5 - 1"
        )
    num_frames = video_bcthw.shape[2]
    if num_frames < min_frames:
        raise ConfigError(
            f"{who} needs clips of at least {min_frames} frames, got {num_frames}: "
            "use a longer clip (raise the clip length in the data config)"
        )


def check_model_range(video: torch.Tensor, *, who: str = "backbone") -> None:
    """Raise ConfigError when values lie clearly outside [-1, 1] (another value convention)."""
    if video.numel() == 0 or video.device.type == "meta":
        return
    low, high = (float(v) for v in torch.aminmax(video.detach()))
    if low < MODEL_RANGE[0] - RANGE_SLACK or high > MODEL_RANGE[1] + RANGE_SLACK:
        raise ConfigError(
            f"{who} expects video values in [-1, 1], got [{low:.3g}, {high:.3g}]: "
            "scale [0, 255] frames with x / 127.5 - 1 and [0, 1] frames with 2 * x - 1"
        )


def unit_range(video: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], the range that ImageNet-style mean/std normalisation starts from."""
    return (video + 1.0) * 0.5


def frame_indices(num_in: int, num_out: int) -> torch.Tensor:
    """``num_out`` evenly spaced indices into ``num_in`` frames: the centre of each of
    ``num_out`` equal slices. Identity when the counts match; each frame repeats about
    num_out / num_in times when the clip is shorter. Integer arithmetic, so no rounding drift.
    """
    if num_in < 1 or num_out < 1:
        raise ConfigError(f"frame counts must be >= 1, got {num_in} -> {num_out}")
    steps = torch.arange(num_out, dtype=torch.long)
    return ((2 * steps + 1) * num_in) // (2 * num_out)


def select_frames(video_bcthw: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, num_frames, H, W) by picking whole frames (see frame_indices)."""
    num_in = video_bcthw.shape[2]
    if num_in == num_frames:
        return video_bcthw
    index_t = frame_indices(num_in, num_frames).to(video_bcthw.device)
    return video_bcthw.index_select(2, index_t)


def resize_frames(video_bcthw: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of every frame to ``size_hw`` (antialiased when shrinking)."""
    batch, channels, num_frames, height, width = video_bcthw.shape
    if (height, width) == tuple(size_hw):
        return video_bcthw
    # Fold T into the batch: this is a per-image op, so it must not mix frames.
    frames_nchw = video_bcthw.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
    shrinking = size_hw[0] < height or size_hw[1] < width
    frames_nchw = F.interpolate(
        frames_nchw, size=size_hw, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return frames_nchw.reshape(batch, num_frames, channels, *size_hw).transpose(1, 2)


def resize_and_crop(video_bcthw: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` (keeping the aspect ratio), then centre-crop a square:
    the evaluation transform that the Kinetics backbones were trained with."""
    height, width = video_bcthw.shape[-2:]
    if height == width == size:
        return video_bcthw
    scale = size / min(height, width)
    new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
    video_bcthw = resize_frames(video_bcthw, new_hw)
    top = (new_hw[0] - size) // 2
    left = (new_hw[1] - size) // 2
    return video_bcthw[..., top : top + size, left : left + size]
