"""Pretrain a small Open-MAGVIT2 tokenizer on the trajectory videos (CPU, minutes).

    python -m shared.magvit.pretrain --preset {micro,tiny} --output DIR [--seed N]
        [--data FILE.npy] [--threads N]

Writes ``DIR/tokenizer.ckpt`` (official layout, EMA weights included, loaded by
``load_tokenizer``), ``DIR/metrics.json`` (held-out PSNR/SSIM, timings, configs) and
``DIR/events.jsonl`` (progress as it goes, the held-out PSNR/SSIM at the end: what orch's
live view shows).

Design choices:
- Loss = L1 (+ MSE in the tiny preset) reconstruction + LFQ terms. The defaults are the
  official 0.1 entropy + 0.25 commitment, minus the perceptual and adversarial terms, because
  LPIPS and a 3D PatchGAN need pretrained weights we cannot download and several times the
  CPU budget. The MSE term is there because L1 alone settles on the median, i.e. the
  background, and the small moving objects are what the tokenizer must learn (and PSNR is an
  MSE measure).
- The tiny preset swaps the entropy and commitment terms for 0.1 x ``bit_correlation_loss``.
  Its bits came out balanced but copies of each other: the factorised codebook entropy is at
  its maximum for balanced bits however correlated they are, while the per-sample entropy and
  the commitment push every latent away from zero, which freezes the bits where they first
  fell. The correlation loss alone gave the best held-out PSNR and the most distinct codes
  (README, "Results so far").
- The budget is wall time (and a step cap for tests); the learning rate follows the larger of
  the step and time fractions: linear warm-up, then cosine decay to ``final_lr_ratio``.
- Where the entropy and commitment terms are on they can ramp up (``aux_warmup``). With the
  official temperature 0.01 their gradient on the encoder is ~100x (entropy) and ~4x
  (commitment) that of the reconstruction at initialisation, so Adam follows them alone and
  the encoder settles on one input-independent code pattern (bits confident and balanced
  over positions, reconstruction stuck at the mean clip). The official model avoids this by
  starting from a pretrained image tokenizer.
- Training clips are random 1 + 4k-frame windows of the data's clips. The tiny preset starts
  on 5-frame windows (``short_frames``; a step costs about a third of a 17-frame one) and
  trains on the full 17 frames for the last 40 % of the budget. Short windows alone are not
  enough: the zero padding in front of every causal conv tells the network how far it is
  from the clip start, and short windows never show it latent frames 3 and 4, so the later
  frames of a full clip come out worse; the full-window phase at the end evens that out
  (README, "Results so far").
- An EMA of the weights is kept (with a warm-up of its decay, the budget is a few hundred
  steps) and saved as ``model_ema.*``; metrics are reported for both weight sets.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared.errors import ConfigError, DataError, run_cli
from shared.magvit.io import save_tokenizer
from shared.magvit.model import MagvitConfig, MagvitTokenizer, tokenizer_config
from shared.magvit.objective import autoencoder_loss
from shared.pretraining import (
    PretrainRun,
    StepBudgetFields,
    add_run_options,
    clipped_step,
    with_budget_options,
)
from shared.runtime import (
    budget_steps,
    configure_threads,
    environment,
    eval_mode,
    seed_everything,
)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig(StepBudgetFields):
    name: str
    tokenizer: str  # preset of shared.magvit.model
    data: str  # preset of shared.data.trajectory_config
    train_frames: int  # window length of training clips, 1 + 4k
    # Shorter windows (1 + 4k frames, 0 = off) for the first ``short_fraction`` of the budget.
    short_frames: int = 0
    short_fraction: float = 0.0
    batch_size: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 20
    final_lr_ratio: float = 0.05
    max_steps: int = 1_000_000
    time_limit_s: float = 1e9  # training stops at this wall time (evaluation comes after)
    train_clips: int = 1_000_000  # distinct training clips (index space of the train split)
    eval_clips: int = 64
    eval_batch_size: int = 16
    ema_decay: float = 0.99
    l1_weight: float = 1.0
    mse_weight: float = 0.0
    entropy_weight: float = 0.1
    commitment_weight: float = 0.25
    decorrelation_weight: float = 0.0  # weight of lfq.bit_correlation_loss on the latents
    # Fraction of the budget over which the entropy and commitment weights ramp up from 0.
    aux_warmup: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.train_frames < 1 or (self.train_frames - 1) % 4:
            raise ConfigError(f"train_frames={self.train_frames}: use 1 + 4k frames (5, 9, 17)")
        if self.short_frames and (
            (self.short_frames - 1) % 4 or not 1 <= self.short_frames <= self.train_frames
        ):
            raise ConfigError(f"short_frames={self.short_frames}: use 1 + 4k frames, at most "
                              f"train_frames={self.train_frames} (0 turns it off)")
        if not 0.0 <= self.short_fraction <= 1.0:
            raise ConfigError(f"short_fraction={self.short_fraction}: use a fraction in [0, 1]")
        if self.batch_size < 1 or self.eval_clips < 1 or self.max_steps < 1:
            raise ConfigError("batch_size, eval_clips and max_steps must be >= 1")


def micro_pretrain() -> PretrainConfig:
    """Seconds: a handful of steps, for tests and gates (quality is not the point)."""
    return PretrainConfig(
        name="micro", tokenizer="micro", data="micro", train_frames=9, batch_size=4, lr=3e-3,
        short_frames=5, short_fraction=0.5, warmup_steps=2, max_steps=6, eval_clips=4,
        eval_batch_size=4, log_every=2, ema_decay=0.9,
    )


def tiny_pretrain() -> PretrainConfig:
    """About 10 minutes on 2 CPU cores, for the study's ``tiny`` preset."""
    return PretrainConfig(
        name="tiny", tokenizer="tiny", data="tiny", train_frames=17, batch_size=4, lr=2e-3,
        warmup_steps=20, time_limit_s=510.0, eval_clips=64, log_every=10, ema_decay=0.99,
        mse_weight=1.0, entropy_weight=0.0, commitment_weight=0.0, decorrelation_weight=0.1,
        short_frames=5, short_fraction=0.6,
    )


PRETRAIN_CONFIGS: dict[str, Callable[[], PretrainConfig]] = {
    "micro": micro_pretrain,
    "tiny": tiny_pretrain,
}


def pretrain_config(name: str) -> PretrainConfig:
    if name not in PRETRAIN_CONFIGS:
        raise ConfigError(
            f"unknown pretrain preset {name!r}: choose one of {', '.join(PRETRAIN_CONFIGS)}"
        )
    return PRETRAIN_CONFIGS[name]()


# --------------------------------------------------------------------------------------------
# Data


class ClipSource:
    """Train / eval clips (3, T, H, W) in [-1, 1] from the trajectory videos or a uint8 file.

    A file is split exactly as the variants split it (``VideoFileDataset``), so a tokenizer is
    never pretrained on the clips the variants are evaluated on.
    """

    def __init__(self, config: PretrainConfig, tok: MagvitConfig, data_file: Path | None) -> None:
        from shared.data import TrajectoryVideos, VideoFileDataset, trajectory_config

        data = trajectory_config(config.data)
        if data_file is None:
            self.train = TrajectoryVideos(data, split="train", size=config.train_clips)
            # The validation split: the held-out one is the study's report's alone.
            self.eval = TrajectoryVideos(data, split="validation", size=config.eval_clips)
        else:
            self.train = VideoFileDataset(data_file, frames=data.frames,
                                          context_frames=data.context_frames, split="train")
            self.eval = VideoFileDataset(data_file, frames=data.frames,
                                         context_frames=data.context_frames,
                                         split="validation")
        self.num_train = len(self.train)
        sample = self.eval[0]["video"]  # (3, T, H, W)
        self.frames, self.resolution = sample.shape[1], sample.shape[2]
        self.num_eval = min(config.eval_clips, len(self.eval))
        s = tok.spatial_factor
        if self.resolution % s or self.frames < config.train_frames:
            raise DataError(
                f"clips of {self.frames} frames at {self.resolution} px do not fit the "
                f"{tok.name} tokenizer (size a multiple of {s}, >= {config.train_frames} frames)"
            )

    def train_clip(self, index: int) -> Tensor:
        return self.train[index % self.num_train]["video"]

    def eval_clip(self, index: int) -> Tensor:
        return self.eval[index]["video"]


class TrainBatches:
    """Batches (B, 3, frames, H, W) of random windows of fresh clips, ``frames`` per call."""

    def __init__(self, source: ClipSource, config: PretrainConfig, seed: int) -> None:
        self.source, self.batch_size = source, config.batch_size
        self.rng = np.random.default_rng(seed)
        self.index = 0

    def next(self, frames: int) -> Tensor:
        clips = []
        for _ in range(self.batch_size):
            video = self.source.train_clip(self.index)
            self.index += 1
            start = int(self.rng.integers(0, video.shape[1] - frames + 1))
            clips.append(video[:, start : start + frames])
        return torch.stack(clips)


def window_frames(config: PretrainConfig, progress: float) -> int:
    """Training window length at ``progress`` (0..1) of the budget."""
    if config.short_frames and progress < config.short_fraction:
        return config.short_frames
    return config.train_frames


# --------------------------------------------------------------------------------------------
# Metrics


@torch.no_grad()
def evaluate(model: MagvitTokenizer, source: ClipSource, config: PretrainConfig) -> dict[str, Any]:
    """Held-out reconstruction quality and code usage of ``model`` (eval mode).

    PSNR / SSIM are means over (clip, frame) pairs with ``shared.metrics`` conventions.
    """
    from shared.metrics import clip_metrics

    psnrs, ssims, l1s, indices = [], [], [], []
    with eval_mode(model):
        for start in range(0, source.num_eval, config.eval_batch_size):
            stop = min(start + config.eval_batch_size, source.num_eval)
            video = torch.stack([source.eval_clip(i) for i in range(start, stop)])
            codes, idx = model.encode(video)
            recon = model.decode(codes)
            scores = clip_metrics(recon, video)  # (B, T) each: the OpenSTL conventions
            psnrs.append(scores["psnr"])
            ssims.append(scores["ssim"])
            l1s.append((recon.clamp(-1, 1) - video).abs().mean(dim=(1, 2, 3, 4)))
            indices.append(idx.flatten())
    all_indices = torch.cat(indices)
    bits = torch.stack([(all_indices >> d) & 1 for d in range(model.config.code_dim)], 1).float()
    return {
        "psnr": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        "l1": float(torch.cat(l1s).mean()),
        "tokens": int(all_indices.numel()),
        "distinct_codes": int(all_indices.unique().numel()),
        "bit_balance": float(bits.mean(0).sub(0.5).abs().max()),  # worst |p(bit) - 1/2|
    }


# --------------------------------------------------------------------------------------------
# Training


def aux_scale(config: PretrainConfig, progress: float) -> float:
    """Weight factor of the entropy and commitment terms: ramps 0 -> 1 over ``aux_warmup``."""
    return 1.0 if config.aux_warmup <= 0 else min(1.0, progress / config.aux_warmup)


def pretrain(
    config: PretrainConfig,
    *,
    output: Path,
    seed: int = 0,
    data_file: Path | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    events: PretrainRun | None = None,
) -> dict[str, Any]:
    """Train, evaluate, write ``output/tokenizer.ckpt``, ``output/metrics.json`` and the
    events (to ``events``, by default ``output/events.jsonl``)."""
    log = log or functools.partial(print, flush=True)  # flushed: a monitor may tail the log
    events = events or PretrainRun(output, config.budget)
    wall_start = time.perf_counter()
    threads = configure_threads(threads)
    seed_everything(seed)
    tok_config = tokenizer_config(config.tokenizer)
    source = ClipSource(config, tok_config, data_file)
    model = MagvitTokenizer(tok_config).train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    n_params = sum(p.numel() for p in model.parameters())
    log(_run_summary(config, tok_config, source, n_params, threads))
    events.start(preset=config.name, seed=seed, device="cpu", epochs=1, threads=threads,
                 batch_size=config.batch_size)
    step, train_s = _train(model, ema, optimizer, TrainBatches(source, config, seed), config, log,
                           events)
    raw_metrics, ema_metrics, checkpoint = _evaluate_and_save(model, ema, source, config, output,
                                                              log)
    events.eval(epoch=1, metrics={"psnr": ema_metrics["psnr"], "ssim": ema_metrics["ssim"]})
    wall_s = time.perf_counter() - wall_start
    metrics = {
        "preset": config.name,
        "seed": seed,
        "steps": step,
        "clips_seen": step * config.batch_size,
        "psnr": ema_metrics["psnr"],  # the weights load_tokenizer uses
        "ssim": ema_metrics["ssim"],
        "eval": {"ema": ema_metrics, "raw": raw_metrics},
        "eval_clips": source.num_eval,
        "eval_frames": source.frames,
        "timings": {"wall_s": wall_s, "train_s": train_s,
                    "clips_per_s": step * config.batch_size / max(train_s, 1e-9)},
        "environment": environment(torch.device("cpu"), threads),
        "parameters": n_params,
        "checkpoint": checkpoint.name,
        "config": asdict(config),
        "tokenizer_config": asdict(tok_config),
        "data": str(data_file) if data_file is not None else f"trajectories:{config.data}",
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(
        f"done: {step} steps in {train_s:.0f} s (wall {wall_s:.0f} s), held-out PSNR "
        f"{ema_metrics['psnr']:.2f} dB / SSIM {ema_metrics['ssim']:.4f} (EMA), "
        f"{raw_metrics['psnr']:.2f} dB / {raw_metrics['ssim']:.4f} (raw) -> {checkpoint}"
    )
    events.end(results=None)  # its figures are in metrics.json, not a results.json
    return metrics


def _run_summary(config: PretrainConfig, tok_config: MagvitConfig, source: ClipSource,
                 n_params: int, threads: int) -> str:
    windows = f"{config.train_frames} frames"
    if config.short_frames:
        windows = (f"{config.short_frames} frames for {config.short_fraction:.0%} of the budget, "
                   f"then {windows}")
    return (
        f"pretrain {config.name}: tokenizer {tok_config.name} ({n_params / 1e6:.2f} M params), "
        f"clips {source.frames}x{source.resolution}x{source.resolution}, windows of {windows}, "
        f"batch {config.batch_size}, {threads} threads, "
        f"budget {config.max_steps} steps / {config.time_limit_s:.0f} s"
    )


def _train(
    model: MagvitTokenizer,
    ema: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    batches: TrainBatches,
    config: PretrainConfig,
    log: Callable[[str], None],
    events: PretrainRun,
) -> tuple[int, float]:
    """Optimizer steps (each followed by an EMA update) until the budget is spent; returns
    (steps, seconds of training)."""
    train_start = time.perf_counter()
    step = 0
    running: dict[str, float] = {}  # sums of the logged terms since the last log line
    for tick in budget_steps(config.budget, optimizer, log):
        video = batches.next(window_frames(config, tick.progress))
        out = model(video)
        aux = aux_scale(config, tick.progress)
        loss, l1, mse, decorrelation = autoencoder_loss(
            out, video, l1=config.l1_weight, mse=config.mse_weight,
            entropy=aux * config.entropy_weight, commitment=aux * config.commitment_weight,
            decorrelation=config.decorrelation_weight,
        )
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at step {step}: lower the lr")
        clipped_step(optimizer, loss, model.parameters(), config.grad_clip)
        step += 1
        _update_ema(ema, model, step=step, max_decay=config.ema_decay)
        for key, value in (("loss", loss), ("l1", l1), ("mse", mse),
                           ("entropy", out.entropy_loss), ("commit", out.commitment_loss),
                           ("decor", decorrelation)):
            running[key] = running.get(key, 0.0) + float(value.detach())
        if step % config.log_every == 0 or step == config.max_steps:
            _log_progress(log, events, running, step=step, config=config,
                          lr=optimizer.param_groups[0]["lr"], train_start=train_start)
            running.clear()
    return step, time.perf_counter() - train_start


@torch.no_grad()
def _update_ema(ema: dict[str, Tensor], model: MagvitTokenizer, *, step: int,
                max_decay: float) -> None:
    # The decay warms up so the average does not drag in the random initialisation.
    decay = min(max_decay, (1 + step) / (10 + step))
    for name, value in model.state_dict().items():
        ema[name].lerp_(value, 1 - decay)


def _log_progress(log: Callable[[str], None], events: PretrainRun, running: dict[str, float],
                  *, step: int, config: PretrainConfig, lr: float, train_start: float) -> None:
    """One line of the mean terms since the last line (``running`` holds their sums), and
    the same mean loss as a progress event."""
    count = config.log_every if step % config.log_every == 0 else step % config.log_every
    avg = {k: v / count for k, v in running.items()}
    psnr = 10 * math.log10(4.0 / max(avg["mse"], 1e-10))  # [-1, 1] range -> peak 2
    seconds = time.perf_counter() - train_start
    log(
        f"step {step:5d} | loss {avg['loss']:.4f} | l1 {avg['l1']:.4f} | "
        f"train psnr {psnr:5.2f} dB | entropy {avg['entropy']:+.3f} | "
        f"commit {avg['commit']:.4f} | decor {avg['decor']:.3f} | lr {lr:.2e} | "
        f"{step * config.batch_size / seconds:.1f} clips/s | {seconds:.0f} s"
    )
    events.budget_progress(step=step, seconds=seconds, loss=avg["loss"], lr=lr,
                           samples_per_s=step * config.batch_size / seconds)


def _evaluate_and_save(
    model: MagvitTokenizer,
    ema: dict[str, Tensor],
    source: ClipSource,
    config: PretrainConfig,
    output: Path,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Held-out metrics of the raw and the EMA weights, and the checkpoint holding both."""
    log(f"evaluating on {source.num_eval} held-out clips of {source.frames} frames")
    raw_metrics = evaluate(model, source, config)
    ema_model = copy.deepcopy(model)
    ema_model.load_state_dict(ema)
    ema_metrics = evaluate(ema_model, source, config)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = save_tokenizer(model, output / "tokenizer.ckpt", ema_state=ema,
                                ema_decay=config.ema_decay)
    return raw_metrics, ema_metrics, checkpoint


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m shared.magvit.pretrain", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", required=True, choices=sorted(PRETRAIN_CONFIGS))
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=None, help="uint8 clips (N, T, H, W, 3)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    config = with_budget_options(pretrain_config(args.preset), args)
    # As a context, the events end with an error event when the run fails.
    events = PretrainRun(args.output, config.budget)
    with events:
        return pretrain(config, output=args.output, seed=args.seed, data_file=args.data,
                        threads=args.threads, events=events)


if __name__ == "__main__":
    run_cli(main)
