"""Metrics follow OpenSTL's conventions; checked against straightforward independent code."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from shared.errors import DataError
from shared.evaluation import Evaluator
from shared.metrics import (
    PSNR_CAP_DB,
    REFERENCE_PREDICTORS,
    MetricAccumulator,
    clip_metrics,
    predict_black,
    predict_copy_last,
    ssim_per_frame,
)


def frame_metrics(pred_bcthw: torch.Tensor, true_bcthw: torch.Tensor) -> dict[str, torch.Tensor]:
    """name -> per-frame values (T,), averaged over the batch."""
    per_clip = clip_metrics(pred_bcthw, true_bcthw)
    return {name: values.mean(dim=0) for name, values in per_clip.items()}


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A target in [-1, 1] and a noisy prediction that leaves the range in places."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(-1, 1, shape)
    pred = true + rng.normal(0, 0.3, shape)
    return torch.tensor(pred), torch.tensor(true)


def _slow_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two 2D [0, 1] images by the textbook formula, one 7x7 window at a time
    (skimage <= 0.19 defaults: uniform window, sample covariance, data_range 2)."""
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    values = []
    for i in range(x.shape[0] - 6):
        for j in range(x.shape[1] - 6):
            a, b = x[i : i + 7, j : j + 7].ravel(), y[i : i + 7, j : j + 7].ravel()
            mean_a, mean_b = a.mean(), b.mean()
            var_a, var_b = a.var(ddof=1), b.var(ddof=1)
            cov = ((a - mean_a) * (b - mean_b)).sum() / (a.size - 1)
            values.append(
                (2 * mean_a * mean_b + c1)
                * (2 * cov + c2)
                / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_values_match_independent_numpy_code():
    pred, true = _pair((2, 3, 4, 9, 11))
    got = frame_metrics(pred, true)
    p, t = (pred.numpy() + 1) / 2, (true.numpy() + 1) / 2  # [0, 1], (B, C, T, H, W)
    clipped = np.clip(p, 0, 1)
    for frame in range(4):
        mse = np.mean([((p[b, :, frame] - t[b, :, frame]) ** 2).sum() for b in range(2)])
        mae = np.mean([np.abs(p[b, :, frame] - t[b, :, frame]).sum() for b in range(2)])
        psnr = np.mean(
            [
                20
                * math.log10(1 / math.sqrt(((clipped[b, :, frame] - t[b, :, frame]) ** 2).mean()))
                for b in range(2)
            ]
        )
        ssim = np.mean(
            [
                np.mean([_slow_ssim(clipped[b, c, frame], t[b, c, frame]) for c in range(3)])
                for b in range(2)
            ]
        )
        assert got["mse"][frame] == pytest.approx(mse, rel=1e-12)
        assert got["mae"][frame] == pytest.approx(mae, rel=1e-12)
        assert got["mse_per_pixel"][frame] == pytest.approx(mse / (3 * 9 * 11), rel=1e-12)
        assert got["psnr"][frame] == pytest.approx(psnr, rel=1e-10)
        assert got["ssim"][frame] == pytest.approx(ssim, abs=1e-10)


@pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="scikit-image is not installed"
)
def test_ssim_matches_scikit_image_with_data_range_2():
    from skimage.metrics import structural_similarity

    pred, true = _pair((1, 3, 2, 16, 16), seed=1)
    p, t = ((pred.clamp(-1, 1) + 1) / 2).numpy(), ((true + 1) / 2).numpy()
    ours = ssim_per_frame(torch.tensor(p), torch.tensor(t))
    for frame in range(2):
        theirs = structural_similarity(
            p[0, :, frame], t[0, :, frame], data_range=2.0, channel_axis=0, win_size=7
        )
        assert float(ours[0, frame]) == pytest.approx(theirs, abs=1e-10)


def test_mse_is_a_per_frame_sum_on_the_unit_scale():
    # OpenSTL's Moving MNIST case: 64x64x1 frames, per-pixel MSE = MSE / 4096
    pred, true = _pair((2, 1, 3, 64, 64), seed=2)
    got = frame_metrics(pred, true)
    assert torch.allclose(got["mse"] / 4096, got["mse_per_pixel"])
    squared = (((pred - true) / 2) ** 2).numpy()  # a difference of d in [-1, 1] is d/2 in [0, 1]
    assert float(got["mse"].mean()) == pytest.approx(squared.sum(axis=(1, 3, 4)).mean(), rel=1e-12)
    rgb_pred, rgb_true = _pair((1, 3, 2, 64, 64), seed=3)
    rgb = frame_metrics(rgb_pred, rgb_true)
    assert torch.allclose(rgb["mse"] / 12288, rgb["mse_per_pixel"])


def test_mse_is_not_clipped_but_psnr_and_ssim_are():
    true = torch.zeros(1, 3, 1, 8, 8)  # 0.5 on [0, 1]
    far = torch.full_like(true, 3.0)  # 2.0 on [0, 1]; clipped to 1.0
    edge = torch.full_like(true, 1.0)  # 1.0 on [0, 1]
    far_metrics, edge_metrics = frame_metrics(far, true), frame_metrics(edge, true)
    assert float(far_metrics["mse"][0]) == pytest.approx(1.5**2 * 192)
    assert float(edge_metrics["mse"][0]) == pytest.approx(0.5**2 * 192)
    assert float(far_metrics["psnr"][0]) == pytest.approx(float(edge_metrics["psnr"][0]))
    assert float(far_metrics["psnr"][0]) == pytest.approx(-10 * math.log10(0.25))
    assert float(far_metrics["ssim"][0]) == pytest.approx(float(edge_metrics["ssim"][0]))


def test_identical_frames_give_ssim_one_and_capped_psnr():
    _, true = _pair((2, 3, 3, 8, 8), seed=4)
    got = frame_metrics(true.clone(), true)
    assert torch.allclose(got["ssim"], torch.ones(3, dtype=torch.float64))
    assert torch.equal(got["psnr"], torch.full((3,), PSNR_CAP_DB, dtype=torch.float64))
    assert float(got["mse"].abs().max()) == 0.0
    # one exact frame among noisy ones: the average stays finite
    pred = true.clone()
    pred[:, :, 1] += 0.1
    psnr = frame_metrics(pred, true)["psnr"]
    assert torch.isfinite(psnr).all() and psnr[0] == PSNR_CAP_DB and psnr[1] < PSNR_CAP_DB


def test_accumulator_averages_over_all_clips_and_frames():
    pred, true = _pair((4, 3, 3, 8, 8), seed=5)
    split = MetricAccumulator()
    split.update(pred[:1], true[:1])
    split.update(pred[1:], true[1:])
    whole = MetricAccumulator()
    whole.update(pred, true)
    a, b = split.result(), whole.result()
    assert a["clips"] == 4
    for name in ("mse", "mae", "psnr", "ssim", "mse_per_pixel"):
        assert a[name] == pytest.approx(b[name], rel=1e-12)
        assert len(a["per_frame"][name]) == 3
        assert a[name] == pytest.approx(np.mean(a["per_frame"][name]), rel=1e-12)
    # the mean over (clip, frame) pairs, not a mean of batch means
    per_clip_mse = (((pred - true) / 2) ** 2).sum(dim=(1, 3, 4))
    assert a["mse"] == pytest.approx(float(per_clip_mse.mean()), rel=1e-12)
    with pytest.raises(DataError):
        MetricAccumulator().result()
    with pytest.raises(DataError):
        split.update(pred[:, :, :2], true[:, :, :2])


def test_reference_predictions():
    _, video = _pair((2, 3, 5, 8, 8), seed=6)
    video = video.float().clamp(-1, 1)
    black, copy_last = predict_black(video[:, :, :3], 2), predict_copy_last(video[:, :, :3], 2)
    assert torch.equal(black, torch.full((2, 3, 2, 8, 8), -1.0))
    assert torch.equal(copy_last, video[:, :, 2:3].expand(2, 3, 2, 8, 8))
    scores = frame_metrics(black, video[:, :, 3:])
    target01 = (video[:, :, 3:] + 1) / 2
    assert float(scores["mse"].mean()) == pytest.approx(
        float(target01.square().sum(dim=(1, 3, 4)).mean()), rel=1e-6
    )


def test_evaluator_scores_every_row_on_the_same_future():
    _, video = _pair((3, 3, 9, 8, 8), seed=7)
    clips = [{"video": clip} for clip in video.float().clamp(-1, 1)]
    evaluator = Evaluator(clips, context_frames=5, batch_size=2)
    seen: list[int] = []

    def mean_of_context(context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        seen.append(context.shape[2])
        return context.mean(dim=2, keepdim=True).expand_as(future)

    row = evaluator.score(mean_of_context, torch.device("cpu"))
    assert seen == [5, 5] and row["clips"] == 3  # two batches; the context only
    copy_last = evaluator.score(
        lambda context, future: REFERENCE_PREDICTORS["copy_last"](context, future.shape[2]),
        torch.device("cpu"))
    by_hand = MetricAccumulator()
    stacked = torch.stack([c["video"] for c in clips])
    by_hand.update(predict_copy_last(stacked[:, :, :5], 4), stacked[:, :, 5:])
    assert copy_last["mse"] == pytest.approx(by_hand.result()["mse"], rel=1e-12)
    exact = evaluator.score(lambda context, future: future, torch.device("cpu"))
    assert exact["psnr"] == PSNR_CAP_DB and exact["ssim"] == pytest.approx(1.0)


def test_bad_inputs_are_data_errors():
    pred, true = _pair((1, 3, 2, 8, 8))
    with pytest.raises(DataError):
        frame_metrics(pred[:, :, :1], true)
    with pytest.raises(DataError, match="7x7"):
        frame_metrics(pred[..., :6, :6], true[..., :6, :6])
