"""--micro-batch: gradient accumulation in the shared loop, and the out-of-memory exit code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from branches.baseline import train as baseline_train
from orchestrator.client import Run
from shared import runtime
from shared.errors import ConfigError, run_cli
from shared.experiment import Experiment, index_batches
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.testing import write_micro_tokenizer
from shared.training import TrainConfig, _EpochLoop, _Optimizer, split_batch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_micro_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.ckpt")


def _run(output, tokenizer_path, *extra):
    return baseline_train.main(["--preset", "micro", "--output", str(output), "--tokenizer",
                                str(tokenizer_path), "--threads", "1", *extra])


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_split_batch_cuts_per_clip_tensors_and_passes_the_rest_whole():
    video_bcthw, weight_b = torch.randn(8, 3, 5, 4, 4), torch.arange(8.0)
    grid, shared_scale = torch.zeros(3), torch.tensor(2.0)
    batch = {"video": video_bcthw, "weight": weight_b, "grid": grid, "scale": shared_scale,
             "name": "clips"}
    pieces = list(split_batch(batch, 8, 3))
    assert [clips for clips, _ in pieces] == [3, 3, 2]
    assert torch.equal(torch.cat([p["video"] for _, p in pieces]), video_bcthw)
    assert [p["weight"].tolist() for _, p in pieces] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    for _, piece in pieces:
        assert piece["grid"] is grid and piece["scale"] is shared_scale
        assert piece["name"] == "clips"
    # A micro-batch as large as the batch: the batch itself, untouched.
    (clips, whole), = split_batch(batch, 8, 8)
    assert clips == 8 and whole is batch


def test_micro_batch_must_divide_the_batch():
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, train_clips=16, eval_clips=2)
    assert (config.micro_batch_size, config.accumulation) == (8, 1)
    assert config.micro_batch_choices == [1, 2, 4, 8]
    with pytest.raises(ConfigError, match="micro_batch=3 must divide"):
        TrainConfig(epochs=1, batch_size=8, lr=1e-3, train_clips=16, eval_clips=2, micro_batch=3)
    cut = TrainConfig(epochs=5, batch_size=8, lr=1e-3, train_clips=100, eval_clips=50,
                      micro_batch=2).rehearsal()
    # The clips of its largest measured step (of 1 and 2 clips), one held-out clip.
    assert (cut.epochs, cut.train_clips, cut.eval_clips, cut.strip_clips) == (1, 2, 1, 1)
    assert (cut.batch_size, cut.micro_batch, cut.accumulation) == (8, 2, 4)
    assert cut.rehearsal() == cut  # applying it twice changes nothing


class _Regression(Experiment):
    """A linear model whose loss is a weighted mean over the clips: per-clip weights (B,)
    travel with the clips, a shared scale does not."""

    def __init__(self, clips: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x_bd = torch.randn(clips, 4, generator=generator)
        self.y_b = torch.randn(clips, generator=generator)
        self.weight_b = torch.rand(clips, generator=generator) + 0.5
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.trainable = nn.Linear(4, 1)
        self.micro_clips: list[int] = []

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def train_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[dict[str, Any]]:
        for chunk in index_batches(order, batch_size):
            yield {"x": self.x_bd[chunk], "y": self.y_b[chunk], "weight": self.weight_b[chunk],
                   "scale": torch.tensor(3.0)}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        self.micro_clips.append(len(batch["x"]))
        error_b = self.trainable(batch["x"])[:, 0] - batch["y"]
        loss = batch["scale"] * (batch["weight"] * error_b.square()).mean()
        return loss, {"mean_weight": float(batch["weight"].mean())}

    def predict(self, context_bcthw: torch.Tensor, future_frames: int) -> torch.Tensor:
        raise NotImplementedError

    def oracle(self, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _train_regression(tmp_path: Path, micro_batch: int | None):
    # 10 clips in batches of 8: the last batch holds 2, fewer than a micro-batch of 4.
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, train_clips=10, eval_clips=1,
                         warmup_steps=0, micro_batch=micro_batch)
    experiment = _Regression(config.train_clips)
    precision = runtime.select_precision("cpu")
    optimizer = _Optimizer.for_experiment(experiment, config, precision, total_steps=2)
    loop = _EpochLoop(config=config, seed=0, total_steps=2, device=torch.device("cpu"),
                      precision=precision, log=Run(tmp_path / f"mb{micro_batch}"),
                      step=0)
    losses, logs = loop.train_epoch(experiment, optimizer, epoch=1)
    return experiment, losses, logs


def test_accumulated_micro_batches_train_like_the_whole_batch(tmp_path):
    whole, whole_losses, whole_logs = _train_regression(tmp_path, None)
    split, split_losses, split_logs = _train_regression(tmp_path, 4)
    assert whole.micro_clips == [8, 2] and split.micro_clips == [4, 4, 2]
    assert split_losses == pytest.approx(whole_losses, rel=1e-6)
    for mine, reference in zip(split_logs, whole_logs, strict=True):  # clip-weighted means
        assert mine["mean_weight"] == pytest.approx(reference["mean_weight"], rel=1e-6)
    for mine, reference in zip(split.trainable.parameters(), whole.trainable.parameters(),
                               strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)


def test_baseline_with_micro_batches_matches_the_whole_batch(tmp_path, tokenizer_path,
                                                             monkeypatch):
    whole = _run(tmp_path / "whole", tokenizer_path)
    calls: list[int] = []
    original_loss = FrozenTokenizerExperiment.loss

    def counting_loss(self, batch):
        calls.append(batch["future_codes"].shape[0])
        return original_loss(self, batch)

    monkeypatch.setattr(FrozenTokenizerExperiment, "loss", counting_loss)
    split = _run(tmp_path / "split", tokenizer_path, "--micro-batch", "4")
    train = split["config"]["train"]
    assert (train["batch_size"], train["micro_batch"], train["accumulation"]) == (8, 4, 2)
    assert set(calls) == {4} and len(calls) == 2 * train["epochs"] * train["train_clips"] // 8
    assert whole["config"]["train"]["accumulation"] == 1
    assert len(split["history"]) == len(whole["history"])
    assert split["metrics"]["model"]["psnr"] == pytest.approx(whole["metrics"]["model"]["psnr"],
                                                            abs=1e-4)
    assert [h["train_loss"] for h in split["history"]] == pytest.approx(
        [h["train_loss"] for h in whole["history"]], rel=1e-5)
    start = _events(tmp_path / "split" / "events.jsonl")[0]
    assert (start["micro_batch"], start["accumulation"], start["rehearsal"]) == (4, 2, False)
    steps = [e["step"] for e in _events(tmp_path / "split" / "events.jsonl")
             if e["event"] == "progress"]
    assert steps[-1] == start["total_steps"] == 8  # optimizer steps, not micro-steps


@pytest.mark.parametrize(("micro_batch", "message"),
                         [("3", "does not divide the batch of 8 clips.*1, 2, 4, 8"),
                          ("0", "at least 1")])
def test_a_bad_micro_batch_is_one_line_and_exit_code_2_before_anything_loads(
        tmp_path, capsys, micro_batch, message):
    missing = tmp_path / "no-such-tokenizer.ckpt"  # loading it would be exit code 3
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: _run(tmp_path / "run", missing, "--micro-batch", micro_batch))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--micro-batch" in err[0]
    assert re.search(message, err[0])


def test_out_of_memory_exits_5_with_an_oom_event_and_leaves_the_checkpoint(
        tmp_path, tokenizer_path, monkeypatch):
    output = tmp_path / "run"
    # At the limit the injection stays quiet: a micro-batch of 4 trains and checkpoints.
    monkeypatch.setenv(runtime.OOM_INJECTION_ENV, "4")
    _run(output, tokenizer_path, "--micro-batch", "4")
    checkpoint = output / "checkpoints" / "last.pt"
    before = (checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns)

    # Above it (the whole batch of 8), the real entry point in its own process.
    env = {**os.environ, runtime.OOM_INJECTION_ENV: "4", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "branches.baseline.train", "--preset", "micro", "--output",
         str(output), "--tokenizer", str(tokenizer_path), "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "retry with a smaller --micro-batch" in err[0]
    assert "micro-batch 8 > 4" in err[0]
    error = _events(output / "events.jsonl")[-1]
    assert error["event"] == "error" and error["kind"] == "oom"
    assert error["message"].startswith("CUDA out of memory")
    assert (checkpoint.read_bytes(), checkpoint.stat().st_mtime_ns) == before
