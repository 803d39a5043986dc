"""Evaluation on held-out clips, beside the rows a model must beat.

Every clip is split into its context frames and its true future. The model sees only the
context. Four rows are scored the same way (``shared.metrics``, OpenSTL conventions):

- ``model``: the experiment's prediction;
- ``black``: black frames (0 on the [0, 1] scale);
- ``copy_last``: the last context frame repeated;
- ``oracle``: the true future encoded and decoded by the tokenizer, the ceiling of a
  latent predictor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.data import LoaderSettings, stack_videos, video_batches
from shared.experiment import Experiment
from shared.metrics import REFERENCE_PREDICTORS, MetricAccumulator

# (context (B, 3, Tc, H, W), true future (B, 3, Tf, H, W)) -> predicted future, same shape
FuturePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Evaluator:
    def __init__(
        self,
        dataset: Dataset[dict[str, Any]],
        *,
        context_frames: int,
        batch_size: int = 16,
        strip_clips: int = 4,
    ) -> None:
        self.dataset = dataset
        self.context_frames = context_frames
        self.batch_size = batch_size
        self.strip_clips = strip_clips
        # The strip clips' predictions at the last evaluate_model: the last weights scored.
        self._strip_predictions: torch.Tensor | None = None

    def _batches(self, device: torch.device, loader: LoaderSettings
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(context, future) pairs, (B, 3, Tc, H, W) and (B, 3, Tf, H, W), in dataset order,
        rendered in the loader's workers when it has some."""
        count = len(self.dataset)  # type: ignore[arg-type]
        chunks = [list(range(start, min(count, start + self.batch_size)))
                  for start in range(0, count, self.batch_size)]
        for video in video_batches(self.dataset, chunks, loader):
            video = video.to(device, non_blocking=True)
            yield video[:, :, : self.context_frames], video[:, :, self.context_frames :]

    @torch.no_grad()
    def score(self, predict: FuturePredictor, device: torch.device,
              loader: LoaderSettings | None = None) -> dict[str, Any]:
        """The metrics of ``predict`` over the held-out clips, rendered as ``loader`` says
        (None: on this thread)."""
        accumulator = MetricAccumulator()
        for context, future in self._batches(device, loader or LoaderSettings()):
            prediction = predict(context, future)
            assert prediction.shape == future.shape, (prediction.shape, future.shape)
            accumulator.update(prediction.float().cpu(), future.float().cpu())
        return accumulator.result()

    def evaluate_model(self, experiment: Experiment) -> dict[str, Any]:
        """The model's row: averaged metrics and their ``per_frame`` lists. The predictions of
        the strip's clips are kept for ``save_strip`` (the same weights, not predicted twice)."""
        predict = _model_predictor(experiment)
        kept: list[torch.Tensor] = []

        def predict_and_keep(context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
            prediction = predict(context, future)
            wanted = self.strip_clips - sum(p.shape[0] for p in kept)
            if wanted > 0:
                kept.append(prediction[:wanted].detach().cpu())
            return prediction

        row = self.score(predict_and_keep, experiment.device, experiment.loader)
        self._strip_predictions = torch.cat(kept) if kept else None
        return row

    def evaluate_all(
        self, experiment: Experiment, *, model_row: dict[str, Any] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The model's row beside the reference rows. ``model_row``: the model's row already
        scored on this evaluator with the same weights (the last epoch's), reused rather than
        predicted again."""
        device = experiment.device
        rows: dict[str, FuturePredictor] = {
            name: lambda context, future, predict=predict: predict(context, future.shape[2])
            for name, predict in REFERENCE_PREDICTORS.items()
        }
        rows["oracle"] = lambda context, future: experiment.oracle(context, future)
        rows |= {name: lambda context, future, predict=predict: predict(context, future.shape[2])
                 for name, predict in experiment.alternative_rows().items()}
        model = model_row if model_row is not None else self.evaluate_model(experiment)
        return {"model": model} | {name: self.score(predict, device, experiment.loader)
                                   for name, predict in rows.items()}

    @torch.no_grad()
    def save_strip(self, experiment: Experiment, path: Path) -> Path:
        """PNG: per clip, a row of context frames, a row of the true future, a row predicted."""
        count = min(self.strip_clips, len(self.dataset))  # type: ignore[arg-type]
        clips = stack_videos(self.dataset, range(count)).to(experiment.device)
        context, future = clips[:, :, : self.context_frames], clips[:, :, self.context_frames :]
        kept = self._strip_predictions
        predicted = (kept.to(future.device) if kept is not None and kept.shape[0] == count
                     else _model_predictor(experiment)(context, future))
        rows = []
        blank = torch.full_like(future[:, :, :1], 1.0)  # white spacer frame
        for b in range(clips.shape[0]):
            rows.append(torch.cat([context[b], blank[b], future[b]], dim=1))
            rows.append(torch.cat([context[b], blank[b], predicted[b].clamp(-1, 1)], dim=1))
        image = _frames_to_image(torch.stack(rows))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        return path


def _model_predictor(experiment: Experiment) -> FuturePredictor:
    def predict(context: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        # Only the context and the number of future frames reach the model.
        return experiment.predict(context, future.shape[2])

    return predict


def _frames_to_image(rows_rcthw: torch.Tensor, pad: int = 1) -> np.ndarray:
    """(R, 3, T, H, W) in [-1, 1] -> uint8 (R*(H+pad), T*(W+pad), 3) grid image."""
    rows, _, frames, height, width = rows_rcthw.shape
    pixels = ((rows_rcthw.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = torch.full((rows * (height + pad), frames * (width + pad), 3), 255, dtype=torch.uint8)
    for r in range(rows):
        for t in range(frames):
            top, left = r * (height + pad), t * (width + pad)
            grid[top : top + height, left : left + width] = pixels[r, :, t].permute(1, 2, 0)
    return grid.numpy()
