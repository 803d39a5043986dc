"""Clip conventions shared by every video source: frame counts, the model's value range, and
items stacked into a batch.

The video tokenizer is causal in time and compresses 4x: the first frame is encoded on its own
and every following group of 4 frames becomes one latent frame. So a clip holds 1 + 4k frames,
and the context a predictor sees must end on a group boundary too, i.e. hold 1 + 4j frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from shared.errors import ConfigError, DataError


def check_frame_counts(frames: int, context_frames: int, *, owner: str) -> None:
    """Raise ConfigError (naming `owner`'s field) unless frames = 1 + 4k > context = 1 + 4j."""
    if not isinstance(frames, int) or frames < 5 or (frames - 1) % 4:
        raise ConfigError(
            f"{owner}.frames={frames!r}: use 1 + 4k frames (5, 9, 13, 17, ...) because the "
            "tokenizer encodes the first frame alone and the rest in groups of 4"
        )
    if (
        not isinstance(context_frames, int)
        or context_frames < 1
        or (context_frames - 1) % 4
        or context_frames >= frames
    ):
        raise ConfigError(
            f"{owner}.context_frames={context_frames!r}: use 1 + 4j frames (1, 5, 9, ...) "
            f"fewer than frames={frames}, so at least one latent frame is left to predict"
        )


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) or (N, T, H, W, 3) -> float32 in [-1, 1], channels first:
    (3, T, H, W) or (N, 3, T, H, W)."""
    if not torch.is_tensor(frames):
        array = np.asarray(frames)
        # A memory-mapped file is read-only; the float copy below is made anyway, so copy the
        # (small) uint8 clip first instead of handing torch a read-only buffer.
        frames = torch.from_numpy(array if array.flags.writeable else array.copy())
    frames_u8 = frames
    if frames_u8.dtype != torch.uint8 or frames_u8.ndim not in (4, 5) or frames_u8.shape[-1] != 3:
        raise DataError(
            f"to_model_range got {frames_u8.dtype} frames shaped {tuple(frames_u8.shape)}: "
            "expected uint8 (T, H, W, 3) or (N, T, H, W, 3)"
        )
    video = frames_u8.to(torch.float32).div_(127.5).sub_(1.0)
    # channels move in front of time: (..., T, H, W, C) -> (..., C, T, H, W)
    return video.movedim(-1, -4).contiguous()


def from_model_range(video: torch.Tensor) -> np.ndarray:
    """Inverse of to_model_range: (3, T, H, W) or (N, 3, T, H, W) -> uint8 (..., T, H, W, 3).

    Values outside [-1, 1] (a model's raw output) are clipped, then rounded to the nearest level.
    """
    if video.ndim not in (4, 5) or video.shape[-4] != 3:
        raise DataError(
            f"from_model_range got a tensor shaped {tuple(video.shape)}: expected (3, T, H, W) "
            "or (N, 3, T, H, W)"
        )
    levels = (video.detach().to(torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5
    return levels.round_().to(torch.uint8).movedim(-4, -1).cpu().numpy()


def stack_videos(dataset: Dataset[dict[str, Any]], indices: Iterable[int]) -> torch.Tensor:
    """The ``video`` of each of the dataset's items ``indices``, stacked: (B, 3, T, H, W)."""
    return _stack_items([dataset[i] for i in indices])


@dataclass(frozen=True)
class LoaderSettings:
    """How training batches of videos are made: in ``workers`` DataLoader processes (0: on
    the calling thread) and, for a CUDA run, in pinned memory so the copy to the GPU can
    overlap the step."""

    workers: int = 0
    pin_memory: bool = False


def video_batches(dataset: Dataset[dict[str, Any]], chunks: list[list[int]],
                  loader: LoaderSettings) -> Iterator[torch.Tensor]:
    """``stack_videos`` of each chunk of indices, in order. With workers, the clips are
    rendered (or read from a --data file) in DataLoader processes, a few batches ahead of the
    training step, instead of on its thread."""
    if loader.workers == 0:
        for chunk in chunks:
            batch = stack_videos(dataset, chunk)
            yield batch.pin_memory() if loader.pin_memory else batch
        return
    yield from DataLoader(dataset, batch_sampler=chunks, num_workers=loader.workers,
                          pin_memory=loader.pin_memory, collate_fn=_stack_items)


def _stack_items(items: list[dict[str, Any]]) -> torch.Tensor:
    """The items' videos as one batch; also the DataLoader's collate function."""
    return torch.stack([item["video"] for item in items])
