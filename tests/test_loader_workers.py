"""Training batches of videos made in DataLoader workers (the full preset's way) are the
batches the loop's own thread makes, in the same order."""

from __future__ import annotations

import torch

from shared.data import (
    LoaderSettings,
    TrajectoryVideos,
    stack_videos,
    trajectory_config,
    video_batches,
)
from shared.presets import study_preset
from shared.training import TrainConfig
from tests.test_joint_i3d_drift import build


def test_workers_render_the_same_batches_in_the_same_order():
    dataset = TrajectoryVideos(trajectory_config("micro"), split="train", size=10)
    chunks = [[3, 1, 4], [0, 9], [5]]
    in_workers = list(video_batches(dataset, chunks, LoaderSettings(workers=2)))
    assert [b.shape[0] for b in in_workers] == [3, 2, 1]
    for batch, chunk in zip(in_workers, chunks, strict=True):
        assert torch.equal(batch, stack_videos(dataset, chunk))


def test_joint_i3d_takes_its_training_clips_from_the_workers(tmp_path):
    experiment, _ = build(tmp_path)
    order = torch.tensor([2, 0, 3, 1])
    on_thread = [b["video"] for b in experiment.train_batches(order, 3)]
    experiment.loader = LoaderSettings(workers=2)
    in_workers = list(experiment.train_batches(order, 3))
    assert [b["video"].shape[0] for b in in_workers] == [3, 1]
    for mine, reference in zip(in_workers, on_thread, strict=True):
        assert torch.equal(mine["video"], reference)
        assert mine["recon_weight"].shape == (mine["video"].shape[0],)


def test_the_full_preset_loads_in_workers_and_the_small_ones_on_the_thread():
    assert study_preset("full").train.loader_workers == 4
    assert study_preset("micro").train.loader_workers == 0
    assert TrainConfig(epochs=1, batch_size=2, lr=1e-3, train_clips=2, eval_clips=1,
                       loader_workers=2).loader_workers == 2
