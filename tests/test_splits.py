"""Three splits: train, validation (what per-epoch evaluations and choices see) and the
held-out eval split (the report's numbers); `--eval-data` scores a file of the user's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from branches.baseline import train as baseline_train
from shared.data import TrajectoryVideos, trajectory_config
from shared.testing import write_micro_tokenizer


def test_the_trajectory_splits_are_different_clips():
    config = trajectory_config("micro")
    first = {split: TrajectoryVideos(config, split=split, size=1)[0]["video"]
             for split in ("train", "validation", "eval")}
    assert not torch.equal(first["train"], first["validation"])
    assert not torch.equal(first["validation"], first["eval"])
    again = TrajectoryVideos(config, split="validation", size=1)[0]["video"]
    assert torch.equal(first["validation"], again)  # a pure function of (seed, split, index)


def test_eval_data_scores_the_users_own_test_file(tmp_path, monkeypatch):
    """--data splits one file three ways; --eval-data's clips are the held-out ones, all of
    them, while the epochs are scored on --data's validation split."""
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.integers(0, 256, (40, 9, 16, 16, 3), dtype=np.uint8))
    np.save(tmp_path / "test.npy", rng.integers(0, 256, (5, 9, 16, 16, 3), dtype=np.uint8))
    tokenizer = write_micro_tokenizer(tmp_path / "tokenizer.ckpt")
    baseline_train.main(["--preset", "micro", "--output", str(tmp_path / "run"),
                         "--tokenizer", str(tokenizer), "--threads", "1",
                         "--data", str(tmp_path / "train.npy"),
                         "--eval-data", str(tmp_path / "test.npy")])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["model"]["clips"] == 5  # the whole test file
    assert all(len(v) == 5 for v in results["per_example"]["model"].values())
    assert results["history"][-1]["eval"]["clips"] == 4  # 10% of 40: the validation split
    assert results["config"]["eval_data_file"] == str(tmp_path / "test.npy")


def test_a_file_too_small_for_three_splits_says_so(tmp_path):
    from shared.data import VideoFileDataset
    from shared.errors import DataError

    np.save(tmp_path / "two.npy", np.zeros((2, 9, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="at least 3"):
        VideoFileDataset(tmp_path / "two.npy", frames=9, context_frames=5, split="train")
    assert len(VideoFileDataset(tmp_path / "two.npy", frames=9, context_frames=5,
                                split="all")) == 2
