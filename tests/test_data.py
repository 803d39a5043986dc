"""Trajectory videos and video files: determinism, shapes, labels, motion, speed, file errors."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from shared.data import (
    TRAJECTORY_CLASSES,
    TrajectoryConfig,
    TrajectoryVideos,
    VideoFileDataset,
    from_model_range,
    load_video_file,
    open_video_array,
    render_clip,
    to_model_range,
    trajectory_config,
)
from shared.data.trajectories import _Camera, _in_view, _paths
from shared.errors import ConfigError, DataError

MICRO = trajectory_config("micro")


# ----------------------------------------------------------------------------- config


def test_presets_have_the_documented_sizes():
    sizes = {
        name: (c.resolution, c.frames, c.context_frames)
        for name in ("micro", "tiny", "full")
        for c in [trajectory_config(name)]
    }
    assert sizes == {"micro": (16, 9, 5), "tiny": (32, 17, 9), "full": (128, 17, 9)}
    assert trajectory_config("tiny", seed=3).seed == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("frames", 8),
        ("frames", 1),
        ("context_frames", 4),
        ("context_frames", 9),  # not fewer than frames
        ("resolution", 4),
        ("min_objects", 0),
        ("classes", ("linear", "spiral")),
        ("shapes", ()),
        ("travel", 0.0),
        ("facets", 3),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        replace(MICRO, **{field: value})


def test_unknown_preset_and_field_are_config_errors():
    with pytest.raises(ConfigError, match="micro"):
        trajectory_config("huge")
    with pytest.raises(ConfigError):
        trajectory_config("micro", colour="red")
    with pytest.raises(TypeError):  # keyword-only
        TrajectoryConfig(16)  # type: ignore[misc]


# ----------------------------------------------------------------------------- rendering


def test_same_seed_split_index_gives_the_same_bytes():
    first, label = render_clip(MICRO, split="train", index=7)
    again, label_again = render_clip(MICRO, split="train", index=7)
    assert first.tobytes() == again.tobytes() and label == label_again
    others = [
        render_clip(MICRO, split="train", index=8)[0],
        render_clip(MICRO, split="eval", index=7)[0],
        render_clip(replace(MICRO, seed=1), split="train", index=7)[0],
    ]
    for other in others:
        assert other.tobytes() != first.tobytes()


def test_train_and_eval_streams_do_not_share_clips():
    train = {render_clip(MICRO, split="train", index=i)[0].tobytes() for i in range(12)}
    evals = {render_clip(MICRO, split="eval", index=i)[0].tobytes() for i in range(12)}
    assert len(train) == 12 and len(evals) == 12 and not train & evals


@pytest.mark.parametrize("resolution, frames", [(8, 5), (16, 9), (24, 13), (40, 21), (64, 17)])
def test_any_resolution_and_length(resolution, frames):
    config = replace(MICRO, resolution=resolution, frames=frames, context_frames=frames - 4)
    clip, label = render_clip(config, index=1)
    assert clip.shape == (frames, resolution, resolution, 3) and clip.dtype == np.uint8
    assert 0 <= label < len(TRAJECTORY_CLASSES)


def test_rendering_options_change_the_picture_not_the_story():
    config = replace(MICRO, resolution=32, shapes=("cube",), min_objects=2, max_objects=2)
    with_shadows, label = render_clip(config, index=2)
    without, label_without = render_clip(replace(config, shadows=False), index=2)
    assert label == label_without
    darker = with_shadows.astype(int).sum(-1) < without.astype(int).sum(-1)
    assert (
        darker.any() and not (with_shadows.astype(int).sum(-1) > without.astype(int).sum(-1)).any()
    )


def test_labels_cover_every_class_and_follow_the_config():
    labels = [render_clip(MICRO, index=i)[1] for i in range(40)]
    assert set(labels) == set(range(len(TRAJECTORY_CLASSES)))
    only_circles = replace(MICRO, classes=("circular",))
    assert {render_clip(only_circles, index=i)[1] for i in range(5)} == {1}


def test_objects_move_and_copy_last_is_imperfect():
    config = trajectory_config("tiny")
    for index in range(12):
        clip, _ = render_clip(config, index=index)
        frames = clip.astype(np.float64) / 255
        context, future = frames[: config.context_frames], frames[config.context_frames :]
        step = np.abs(np.diff(frames, axis=0)).sum(axis=(1, 2, 3))
        assert (step > 0).all(), f"clip {index} has a frame identical to the one before"
        copy_last_mse = ((future - context[-1]) ** 2).mean()
        assert copy_last_mse > 1e-4, f"clip {index}: copy-last is almost perfect"


@pytest.mark.parametrize("kind", TRAJECTORY_CLASSES)
def test_paths_move_a_few_pixels_per_frame_and_mostly_stay_in_view(kind):
    config = trajectory_config("tiny")
    camera = _Camera(config.resolution, config.resolution)
    s_t = np.linspace(0, 1, config.frames)
    paths = _paths(kind, s_t, np.random.default_rng(0), config.travel, 200)
    pixels, _ = camera.project(paths)
    speed = np.linalg.norm(np.diff(pixels, axis=1), axis=-1).mean()
    assert 0.8 < speed < 4.0, f"{kind}: {speed:.2f} px/frame"
    in_view = _in_view(camera, paths, np.ones(200), np.ones(200))
    # render_clip keeps the first of PATH_CANDIDATES draws that stays in view; at this rate
    # all of them fail for fewer than 1 object in 10^3
    assert (in_view == 1.0).mean() > 0.5 and in_view.mean() > 0.9


def test_rendered_objects_change_a_visible_but_small_part_of_each_frame():
    config = trajectory_config("tiny")
    changed = []
    for index in range(10):
        clip, _ = render_clip(config, index=index)
        step = np.abs(np.diff(clip.astype(np.int16), axis=0)).max(axis=-1) > 8
        changed.append(step.mean())
    assert 0.005 < float(np.mean(changed)) < 0.25


def test_perspective_makes_farther_points_smaller():
    camera = _Camera(32, 32)
    near, far = (
        np.array([[1.0, 0.0, 4.0], [1.0, 1.0, 4.0]]),
        np.array([[1.0, 0.0, 8.0], [1.0, 1.0, 8.0]]),
    )
    (near_px, _), (far_px, _) = camera.project(near), camera.project(far)
    assert abs(far_px[0, 0] - 16) < abs(near_px[0, 0] - 16)  # closer to the centre
    assert far_px[0, 1] - far_px[1, 1] < near_px[0, 1] - near_px[1, 1]  # shorter
    assert far_px[0, 1] < near_px[0, 1]  # higher in the image, towards the horizon


@pytest.mark.usefixtures("one_torch_thread")
def test_render_speed_sanity():
    config = trajectory_config("tiny")
    render_clip(config, index=0)
    start = time.process_time()
    for index in range(20):
        render_clip(config, index=index)
    fps = 20 * config.frames / (time.process_time() - start)
    assert fps > 300, f"{fps:.0f} frames/s at 32x32 (expected thousands)"


def test_dataset_items_are_model_ready():
    dataset = TrajectoryVideos(MICRO, split="eval", size=6)
    item = dataset[3]
    assert set(item) == {"video", "label", "index"} and item["index"] == 3
    video = item["video"]
    assert video.dtype == torch.float32 and video.shape == (3, 9, 16, 16)
    assert -1.0 <= video.min() and video.max() <= 1.0
    frames, label = render_clip(MICRO, split="eval", index=3)
    assert item["label"] == label
    assert np.array_equal(from_model_range(video), frames)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["video"].shape == (4, 3, 9, 16, 16) and batch["label"].shape == (4,)
    with pytest.raises(IndexError):
        dataset[6]
    with pytest.raises(ConfigError):
        TrajectoryVideos(MICRO, split="test", size=2)


def test_model_range_round_trip_and_errors():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    video = to_model_range(frames)
    assert video.shape == (2, 3, 5, 8, 8)
    assert video.min() >= -1 and video.max() <= 1
    assert np.array_equal(from_model_range(video), frames)
    assert np.array_equal(from_model_range(to_model_range(frames[0])), frames[0])
    with pytest.raises(DataError):
        to_model_range(frames.astype(np.float32))


# ----------------------------------------------------------------------------- files


def _clips(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npy_and_npz_round_trip(tmp_path):
    rgb = _clips((3, 9, 16, 16, 3))
    np.save(tmp_path / "rgb.npy", rgb)
    assert isinstance(open_video_array(tmp_path / "rgb.npy"), np.memmap)
    assert np.array_equal(load_video_file(tmp_path / "rgb.npy"), rgb)

    grey = _clips((2, 9, 16, 16))
    np.save(tmp_path / "grey.npy", grey)
    np.save(tmp_path / "grey1.npy", grey[..., None])
    for name in ("grey.npy", "grey1.npy"):
        loaded = load_video_file(tmp_path / name)
        assert loaded.shape == (2, 9, 16, 16, 3)
        assert all(np.array_equal(loaded[..., c], grey) for c in range(3))

    np.savez_compressed(tmp_path / "named.npz", other=grey, videos=rgb)
    assert np.array_equal(load_video_file(tmp_path / "named.npz"), rgb)
    np.savez(tmp_path / "first.npz", rgb)
    assert np.array_equal(load_video_file(tmp_path / "first.npz"), rgb)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.npy", None, "not found"),
        ("videos.mp4", b"", "expected a .npy or .npz"),
        ("garbage.npy", b"not a numpy file", "could not be read"),
        ("garbage.npz", b"not a zip file", "could not be read"),
        ("floats.npy", np.zeros((2, 5, 8, 8), np.float32), "float32"),
        ("flat.npy", np.zeros((10, 64, 64), np.uint8), "has shape (10, 64, 64)"),
        ("two.npy", np.zeros((2, 5, 8, 8, 2), np.uint8), "has shape (2, 5, 8, 8, 2)"),
        ("one.npy", np.zeros((2, 1, 8, 8), np.uint8), "1 frame per clip"),
        ("objects.npy", np.array([None, 1], dtype=object), "could not be read"),
    ],
)
def test_malformed_files_give_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    with pytest.raises(DataError) as caught:
        load_video_file(path)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    if name != "videos.mp4":
        assert "(N, T, H, W)" in message or "frames per clip" in message


def test_file_dataset_splits_cuts_and_checks(tmp_path):
    clips = _clips((10, 12, 16, 24))
    np.save(tmp_path / "videos.npy", clips)
    path = tmp_path / "videos.npy"
    train = VideoFileDataset(path, frames=9, context_frames=5, split="train")
    evals = VideoFileDataset(path, frames=9, context_frames=5, split="eval", eval_fraction=0.2)
    assert len(train) == 8 and len(evals) == 2  # 10 clips: 1 validation, 1 eval by default
    again = VideoFileDataset(path, frames=9, context_frames=5, split="eval", eval_fraction=0.2)
    assert list(evals.clip_ids) == list(again.clip_ids)
    # Three disjoint splits that cover the file; "all" is the whole file.
    parts = {split: set(VideoFileDataset(path, frames=9, context_frames=5,
                                         split=split).clip_ids)
             for split in ("train", "validation", "eval")}
    assert [len(p) for p in parts.values()] == [8, 1, 1]
    assert set.union(*parts.values()) == set(range(10)) and sum(map(len, parts.values())) == 10
    assert len(VideoFileDataset(path, frames=9, context_frames=5, split="all")) == 10

    item = train[0]
    assert set(item) == {"video", "label", "index"} and item["label"] == -1
    assert item["video"].shape == (3, 9, 16, 24) and item["video"].dtype == torch.float32
    expected = np.repeat(clips[train.clip_ids[0], :9, ..., None], 3, axis=-1)
    assert np.array_equal(from_model_range(item["video"]), expected)

    with pytest.raises(DataError, match="at least 13"):
        VideoFileDataset(path, frames=13, context_frames=5)
    with pytest.raises(ConfigError, match="frames"):
        VideoFileDataset(path, frames=10, context_frames=5)
    with pytest.raises(ConfigError, match="eval_fraction"):
        VideoFileDataset(path, frames=9, context_frames=5, eval_fraction=1.0)
    np.save(tmp_path / "odd.npy", _clips((4, 9, 12, 16)))
    with pytest.raises(DataError, match="divisible by 8"):
        VideoFileDataset(tmp_path / "odd.npy", frames=9, context_frames=5)
