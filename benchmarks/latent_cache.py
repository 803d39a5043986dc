"""Epoch time of the baseline with and without the latent cache (tiny preset, CPU).

    python -m benchmarks.latent_cache [--clips 256] [--threads 2]

Without the cache every batch renders its clips and runs the frozen tokenizer's encoder twice
(context alone, whole clip); with it the latents are read from memory after one fill from
disk. The tokenizer has random weights here: its cost does not depend on what it learned.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from branches.baseline.config import baseline_config
from branches.baseline.model import build_experiment
from orchestrator.client import Run
from shared.data import TrajectoryVideos
from shared.experiment import Experiment
from shared.latent_cache import ClipCache
from shared.magvit import MagvitTokenizer, tokenizer_config


def epoch_seconds(experiment: Experiment, clips: int, batch_size: int) -> float:
    """Wall time of one training epoch over ``clips`` clips, optimizer steps included."""
    optimizer = torch.optim.AdamW(experiment.trainable.parameters(), lr=1e-3)
    start = time.perf_counter()
    for batch in experiment.train_batches(torch.randperm(clips), batch_size):
        loss, _ = experiment.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class CacheTimings(NamedTuple):
    """Seconds: an epoch without the cache, the cache's first fill, its reload by a new
    experiment (a rerun or another worktree), an epoch with it."""

    without: float
    fill: float
    reload: float
    with_cache: float


def time_cache(experiment: Callable[[Path | None], Experiment], clips: int, batch_size: int,
               *, warm_up: bool = False) -> CacheTimings:
    """``experiment(root)`` builds an experiment whose caches live under ``root`` (None: no
    cache); ``warm_up`` runs one untimed batch before the first timed epoch."""
    uncached = experiment(None)
    if warm_up:
        epoch_seconds(uncached, batch_size, batch_size)
    without = epoch_seconds(uncached, clips, batch_size)
    with tempfile.TemporaryDirectory() as root:
        log = Run(Path(root))
        cached = experiment(Path(root))
        start = time.perf_counter()
        cached.prepare(log)
        fill = time.perf_counter() - start
        with_cache = epoch_seconds(cached, clips, batch_size)
        reloaded = experiment(Path(root))
        start = time.perf_counter()
        reloaded.prepare(log)
        reload = time.perf_counter() - start
    return CacheTimings(without, fill, reload, with_cache)


def print_cache_figures(timings: CacheTimings) -> None:
    """The figures both cache benchmarks print, in seconds, and the per-epoch ratio."""
    print(f"epoch without cache         {timings.without:8.2f} s")
    print(f"cache fill (once, cold)     {timings.fill:8.2f} s")
    print(f"cache load (rerun/worktree) {timings.reload:8.2f} s")
    print(f"epoch with cache            {timings.with_cache:8.2f} s")
    print(f"speed-up per epoch          {timings.without / timings.with_cache:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = baseline_config("tiny")
    study = config.study
    tokenizer = MagvitTokenizer(tokenizer_config(study.tokenizer_preset)).eval()
    train_set = TrajectoryVideos(study.data, split="train", size=args.clips)
    batch = study.train.batch_size

    def experiment(root: Path | None) -> Experiment:
        cache = None if root is None else ClipCache(root, kind="latents", key={"benchmark": 1})
        return build_experiment(config, tokenizer=tokenizer, train_set=train_set,
                                train_clips=args.clips, cache=cache)

    timings = time_cache(experiment, args.clips, batch)
    print(f"tiny preset, {args.clips} clips of {study.data.frames}x{study.data.resolution}px, "
          f"batch {batch}, {args.threads} threads")
    print_cache_figures(timings)


if __name__ == "__main__":
    main()
