"""Frame-prediction metrics with OpenSTL's conventions, so numbers sit beside published tables.

Inputs are model-range tensors in [-1, 1] shaped (B, 3, T, H, W); everything is scored on the
[0, 1] scale, in float64, frame by frame:
- mse, mae: per-frame SUMS over C*H*W of the squared / absolute error, prediction not clipped.
  This is OpenSTL's MSE (64x64x1 Moving MNIST: divide by 4096 for a per-pixel value).
- mse_per_pixel: the same squared error as a mean over C*H*W (what most people call MSE),
  reported beside the sum so the two are never confused.
- psnr: prediction clipped to [0, 1]; per frame -10 log10(per-pixel MSE), then averaged over
  frames. A frame predicted exactly has infinite PSNR (OpenSTL returns inf and the average
  becomes inf); we cap every frame at PSNR_CAP_DB so averages stay finite and comparable.
- ssim: prediction clipped to [0, 1]; scikit-image <= 0.19 defaults as OpenSTL used them: 7x7
  uniform window, sample covariance (49/48), K1 = 0.01, K2 = 0.03 and data_range = 2 (the
  range skimage assumed for float images), mean over the window positions that fit inside the
  frame, channels averaged.
- sharpness: how much spatial detail the prediction keeps: per frame, the energy of the
  clipped prediction's spatial gradients (squared differences of neighbouring pixels, across
  and down, summed over C*H*W) over the true frame's; 1 is the true frame's detail, below 1
  blur, above 1 noise or ringing, 0 a flat frame. PSNR and SSIM reward a blurred mean of the
  possible futures; this does not. Declared "closest to 1 is best".
The averages over clips and frames are plain means over all (clip, frame) pairs, as OpenSTL's.
The accumulator also keeps each clip's metrics (means over its frames): paired comparisons
between variants scored on the same clips need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from shared.errors import DataError

PSNR_CAP_DB = 100.0  # PSNR of a frame predicted exactly (per-pixel MSE <= 1e-10)
SSIM_WINDOW = 7
SSIM_DATA_RANGE = 2.0  # skimage <= 0.19 inferred -1..1 for float images; OpenSTL inherited it
SSIM_K1, SSIM_K2 = 0.01, 0.03

# (context (B, 3, Tc, H, W), number of future frames) -> prediction (B, 3, Tf, H, W)
Predictor = Callable[[torch.Tensor, int], torch.Tensor]


def _check_pair(pred: torch.Tensor, true: torch.Tensor) -> None:
    if pred.shape != true.shape or pred.ndim != 5:
        raise DataError(
            f"prediction {tuple(pred.shape)} and target {tuple(true.shape)}: expected two "
            "tensors of one shape (B, C, T, H, W)"
        )
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise DataError(
            f"frames of {pred.shape[-2]}x{pred.shape[-1]} pixels: SSIM needs at least "
            f"{SSIM_WINDOW}x{SSIM_WINDOW}"
        )


def ssim_per_frame(pred01: torch.Tensor, true01: torch.Tensor) -> torch.Tensor:
    """SSIM (B, T) of [0, 1] tensors (B, C, T, H, W), skimage <= 0.19 recipe (module docstring)."""
    b, c, t, h, w = pred01.shape
    # one greyscale image per (clip, frame, channel): (B*T*C, 1, H, W)
    x = pred01.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    y = true01.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)

    def window_mean(image: torch.Tensor) -> torch.Tensor:  # only windows inside the frame
        return F.avg_pool2d(image, SSIM_WINDOW, stride=1)

    mean_x, mean_y = window_mean(x), window_mean(y)
    sample = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)  # unbiased (sample) covariance
    var_x = sample * (window_mean(x * x) - mean_x * mean_x)
    var_y = sample * (window_mean(y * y) - mean_y * mean_y)
    cov_xy = sample * (window_mean(x * y) - mean_x * mean_y)
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3)).reshape(b, t, c).mean(dim=2)


def gradient_energy(frames01: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T): sum over C*H*W of squared horizontal and vertical
    neighbour differences."""
    across = (frames01[..., :, 1:] - frames01[..., :, :-1]).square().sum(dim=(1, 3, 4))
    down = (frames01[..., 1:, :] - frames01[..., :-1, :]).square().sum(dim=(1, 3, 4))
    return across + down


# A true frame without any detail (a flat colour) would divide by zero: both energies get
# this much, so a flat prediction of a flat frame scores 1.
GRADIENT_EPS = 1e-8


def clip_metrics(pred_bcthw: torch.Tensor, true_bcthw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric for every (clip, frame): name -> float64 tensor (B, T)."""
    _check_pair(pred_bcthw, true_bcthw)
    pred = (pred_bcthw.detach().to("cpu", torch.float64) + 1) / 2  # [-1, 1] -> [0, 1]
    true = (true_bcthw.detach().to("cpu", torch.float64) + 1) / 2
    frame_dims = (1, 3, 4)  # C, H, W
    error = pred - true
    mse = error.square().sum(dim=frame_dims)
    mae = error.abs().sum(dim=frame_dims)
    clipped = pred.clamp(0.0, 1.0)
    per_pixel_clipped = (clipped - true).square().mean(dim=frame_dims)
    floor = 10 ** (-PSNR_CAP_DB / 10)
    psnr = -10 * torch.log10(per_pixel_clipped.clamp_min(floor))
    pixels = math.prod(pred.shape[i] for i in frame_dims)
    return {
        "mse": mse,
        "mae": mae,
        "psnr": psnr,
        "ssim": ssim_per_frame(clipped, true),
        "mse_per_pixel": mse / pixels,
        "sharpness": (gradient_energy(clipped) + GRADIENT_EPS)
        / (gradient_energy(true) + GRADIENT_EPS),
    }


class MetricAccumulator:
    """Sums per-frame metrics over batches; result() averages over all clips and frames."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.per_clip: dict[str, list[float]] = {}  # metric -> each clip's mean over frames
        self.clips = 0

    def update(self, pred_bcthw: torch.Tensor, true_bcthw: torch.Tensor) -> None:
        per_clip = clip_metrics(pred_bcthw, true_bcthw)
        frames = pred_bcthw.shape[2]
        if self.sums and len(self.sums["mse"]) != frames:
            raise DataError(
                f"a batch of {frames} future frames after batches of {len(self.sums['mse'])}: "
                "score one clip length per accumulator"
            )
        for name, values in per_clip.items():
            self.sums[name] = self.sums.get(name, 0) + values.sum(dim=0)
            self.per_clip.setdefault(name, []).extend(values.mean(dim=1).tolist())
        self.clips += pred_bcthw.shape[0]

    def result(self) -> dict[str, Any]:
        """{metric: mean over clips and frames, "per_frame": {metric: [per frame]},
        "per_clip": {metric: [per clip, in the order scored]}, "clips": n}."""
        if not self.clips:
            raise DataError("no clips were scored: call update() with at least one batch")
        per_frame = {name: total / self.clips for name, total in self.sums.items()}
        out: dict[str, Any] = {name: float(values.mean()) for name, values in per_frame.items()}
        out["per_frame"] = {name: values.tolist() for name, values in per_frame.items()}
        out["per_clip"] = {name: list(values) for name, values in self.per_clip.items()}
        out["clips"] = self.clips
        return out


def predict_black(context_bcthw: torch.Tensor, future_frames: int) -> torch.Tensor:
    """The black row: every future frame 0 on the [0, 1] scale (-1 in model range)."""
    b, c, _, h, w = context_bcthw.shape
    return context_bcthw.new_full((b, c, future_frames, h, w), -1.0)


def predict_copy_last(context_bcthw: torch.Tensor, future_frames: int) -> torch.Tensor:
    """The copy-last row: the last context frame, repeated."""
    b, c, _, h, w = context_bcthw.shape
    return context_bcthw[:, :, -1:].expand(b, c, future_frames, h, w)


# The rows every model must beat, scored beside it (shared.evaluation).
REFERENCE_PREDICTORS: dict[str, Predictor] = {"black": predict_black,
                                              "copy_last": predict_copy_last}
