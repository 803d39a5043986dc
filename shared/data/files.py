"""Bring your own videos: a .npy or .npz file of uint8 clips, served like the trajectory videos.

A .npy file is opened memory-mapped, so a dataset bigger than memory costs only the clips that
are read. A .npz file (possibly compressed) is read whole: numpy cannot map it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shared.data.clips import check_frame_counts, to_model_range
from shared.errors import ConfigError, DataError

EXPECTED = "expected uint8 frames shaped (N, T, H, W) or (N, T, H, W, C) with C in {1, 3}"
NPZ_KEYS = ("videos", "frames")  # preferred array names in a .npz; else its first array
SPLIT_SEED = 0  # the split belongs to the file, not to a training run's seed
# eval: the held-out clips the report's numbers come from; validation: the clips choices are
# made on; all: every clip (a file given as --eval-data, a benchmark's own test set).
FILE_SPLITS = ("train", "validation", "eval", "all")
SPATIAL_MULTIPLE = 8  # the tokenizer downsamples height and width by 8


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def open_video_array(path: str | Path) -> np.ndarray:
    """The file's clips, validated but not copied: (N, T, H, W) or (N, T, H, W, C) uint8.

    A .npy comes back memory-mapped. Raises DataError (one line) for any unusable file.
    """
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file of {EXPECTED[9:]}")
    if not path.is_file():
        raise DataError(f"{path} not found: pass a .npy or .npz file of {EXPECTED[9:]}")
    try:
        if path.suffix == ".npy":
            videos = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if not names:
                    raise DataError(f"{path} holds no arrays: {EXPECTED}")
                name = next((key for key in NPZ_KEYS if key in names), names[0])
                videos = archive[name]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{path} could not be read as a numpy file ({_first_line(error)}): {EXPECTED}"
        ) from None
    if videos.dtype != np.uint8:
        raise DataError(f"{path} holds {videos.dtype} values: {EXPECTED}")
    shape = tuple(videos.shape)
    channels_ok = videos.ndim == 4 or (videos.ndim == 5 and shape[-1] in (1, 3))
    if not channels_ok or min(shape, default=0) < 1:
        raise DataError(f"{path} has shape {shape}: {EXPECTED}")
    if shape[1] < 2:
        raise DataError(
            f"{path} has {shape[1]} frame per clip (shape {shape}): expected at least 2 frames"
            " per clip, some to see and some to predict"
        )
    return videos


def _as_rgb(clips: np.ndarray, *, has_channels: bool) -> np.ndarray:
    """uint8 (..., H, W) or (..., H, W, 1|3) -> (..., H, W, 3); greyscale is repeated."""
    if not has_channels:
        clips = clips[..., None]
    if clips.shape[-1] == 1:
        clips = np.repeat(clips, 3, axis=-1)
    return np.ascontiguousarray(clips)


def load_video_file(path: str | Path) -> np.ndarray:
    """Read a whole video file -> uint8 (N, T, H, W, 3) in memory."""
    videos = open_video_array(path)
    return _as_rgb(np.asarray(videos), has_channels=videos.ndim == 5)


class VideoFileDataset(Dataset):
    """Clips of a video file, cut to `frames` frames, as items like TrajectoryVideos' items.

    Each clip keeps its first `frames` frames. The clips are split into train, validation and
    eval (10% each of the last two by default) by a fixed shuffle, so the split does not
    change between runs; split "all" takes every clip. Files carry no labels: an item's label
    is -1.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        frames: int,
        context_frames: int,
        split: str = "train",
        eval_fraction: float = 0.1,
        validation_fraction: float = 0.1,
    ):
        check_frame_counts(frames, context_frames, owner="VideoFileDataset")
        if split not in FILE_SPLITS:
            raise ConfigError(f"split={split!r}: use one of {', '.join(FILE_SPLITS)}")
        if not (0.0 < eval_fraction < 1.0 and 0.0 < validation_fraction < 1.0
                and eval_fraction + validation_fraction < 1.0):
            raise ConfigError(f"eval_fraction={eval_fraction!r}, validation_fraction="
                              f"{validation_fraction!r}: use fractions in (0, 1) summing to "
                              "less than 1")
        self.path = Path(path)
        self.videos = open_video_array(self.path)
        clips, length, height, width = self.videos.shape[:4]
        if length < frames:
            raise DataError(
                f"{self.path} has {length} frames per clip: expected at least {frames}; use "
                "longer clips or fewer frames"
            )
        if height % SPATIAL_MULTIPLE or width % SPATIAL_MULTIPLE:
            raise DataError(
                f"{self.path} has {height}x{width} frames: expected height and width divisible "
                f"by {SPATIAL_MULTIPLE} (the tokenizer downsamples by {SPATIAL_MULTIPLE}); crop "
                "or resize them"
            )
        if clips < 3 and split != "all":
            raise DataError(
                f"{self.path} holds {clips} clip(s): expected at least 3, for train, validation "
                "and eval (or pass it as --eval-data, scored whole)"
            )
        n_eval = min(clips - 2, max(1, round(clips * eval_fraction)))
        n_val = min(clips - 1 - n_eval, max(1, round(clips * validation_fraction)))
        order = np.random.default_rng(SPLIT_SEED).permutation(clips)
        chosen = {"eval": order[:n_eval], "validation": order[n_eval:n_eval + n_val],
                  "train": order[n_eval + n_val:], "all": order}[split]
        self.clip_ids = np.sort(chosen)  # file order reads a memory-mapped file sequentially
        self.frames, self.context_frames, self.split = frames, context_frames, split

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip {index} of {len(self)}")
        index %= len(self)
        clip = np.asarray(self.videos[self.clip_ids[index], : self.frames])
        rgb = _as_rgb(clip, has_channels=self.videos.ndim == 5)
        video: torch.Tensor = to_model_range(rgb)  # (3, T, H, W) in [-1, 1]
        return {"video": video, "label": -1, "index": index}
