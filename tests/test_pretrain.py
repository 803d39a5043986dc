"""Pretraining the small tokenizer: the micro run end to end, its data file path, its metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.errors import ConfigError, DataError
from shared.magvit import load_tokenizer
from shared.magvit.model import tokenizer_config
from shared.magvit.pretrain import ClipSource, TrainBatches, main, pretrain_config, window_frames


def test_micro_pretrain_writes_a_loadable_tokenizer_and_metrics(tmp_path: Path) -> None:
    args = ["--preset", "micro", "--output", str(tmp_path), "--seed", "3", "--threads", "1"]
    metrics = main(args)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["steps"] == metrics["steps"] == 6
    assert written["seed"] == 3 and written["environment"]["threads"] == 1
    for weights in ("ema", "raw"):
        assert 5.0 < written["eval"][weights]["psnr"] < 60.0
        assert -1.0 <= written["eval"][weights]["ssim"] <= 1.0
    assert written["psnr"] == written["eval"]["ema"]["psnr"]

    tokenizer = load_tokenizer(tmp_path / "tokenizer.ckpt")  # EMA weights, config from the file
    assert tokenizer.config.name == "micro"
    state = torch.load(tmp_path / "tokenizer.ckpt", weights_only=True)["state_dict"]
    assert "model_ema.decay" in state and "model_ema.encoderconv_inconv_1weight" in state
    # training changed the weights, and the EMA differs from the last raw weights
    raw = load_tokenizer(tmp_path / "tokenizer.ckpt", prefer_ema=False)
    conv_in = "encoder.conv_in.conv_1.weight"
    assert not torch.equal(raw.state_dict()[conv_in], tokenizer.state_dict()[conv_in])


def test_data_file_replaces_the_trajectories(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(8, 9, 16, 16, 3), dtype=np.uint8)
    data = tmp_path / "clips.npy"
    np.save(data, clips)
    metrics = main(["--preset", "micro", "--output", str(tmp_path / "run"), "--data", str(data),
                    "--threads", "1", "--max-steps", "2"])
    assert metrics["steps"] == 2 and metrics["data"] == str(data)
    np.save(data, clips.astype(np.float32))
    with pytest.raises(DataError, match="uint8"):
        main(["--preset", "micro", "--output", str(tmp_path / "bad"), "--data", str(data)])


def test_short_windows_come_first_then_the_full_ones() -> None:
    config = pretrain_config("micro")
    assert (config.short_frames, config.short_fraction, config.train_frames) == (5, 0.5, 9)
    assert [window_frames(config, p) for p in (0.0, 0.49, 0.5, 1.0)] == [5, 5, 9, 9]
    source = ClipSource(config, tokenizer_config(config.tokenizer), None)
    batches = TrainBatches(source, config, seed=0)
    assert batches.next(5).shape == (4, 3, 5, 16, 16)
    assert batches.next(9).shape == (4, 3, 9, 16, 16)
    assert batches.index == 8  # every batch takes fresh clips
    tiny = pretrain_config("tiny")
    assert window_frames(tiny, 0.0) == 5 and window_frames(tiny, 0.99) == 17
    for bad in ({"short_frames": 6}, {"short_frames": 21}, {"short_fraction": 1.5}):
        with pytest.raises(ConfigError):
            replace(config, **bad)
