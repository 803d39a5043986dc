"""Epoch time of slowfast-frozen with and without the feature cache (tiny preset, CPU).

    python -m benchmarks.slowfast_cache [--clips 256] [--threads 1] [--time-resolved]

Without the cache every batch renders its clips, runs the frozen tokenizer's encoder twice
(context alone, whole clip) and SlowFast once on the context; with it the latents and the
SlowFast features are read from memory after one fill from disk. Tokenizer and SlowFast have
RANDOM weights here: their cost does not depend on what they learned, so the timings hold for
the pretrained ones; the features themselves mean nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.latent_cache import print_cache_figures, time_cache
from branches.slowfast_frozen.config import slowfast_frozen_config
from branches.slowfast_frozen.model import SlowFastCondition, build_experiment
from shared.data import TrajectoryVideos
from shared.latent_cache import ClipCache
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.magvit import MagvitTokenizer, tokenizer_config
from shared.motion.slowfast import SlowFastR50, slowfast_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-resolved", action="store_true", help="one token per slow frame")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = replace(slowfast_frozen_config("tiny"), time_resolved=args.time_resolved)
    study = config.study
    tokenizer = MagvitTokenizer(tokenizer_config(study.tokenizer_preset)).eval()
    condition = SlowFastCondition(SlowFastR50(slowfast_config("tiny")).eval(),
                                  time_resolved=config.time_resolved)
    train_set = TrajectoryVideos(study.data, split="train", size=args.clips)
    batch = study.train.batch_size

    def experiment(root: Path | None) -> FrozenTokenizerExperiment:
        """Latents and features cached under ``root`` (None: computed for every batch)."""
        latents = features = None
        if root is not None:
            latents = ClipCache(root, kind="latents", key={"benchmark": 1})
            features = ClipCache(root, kind="features", key=condition.cache_key)
        return build_experiment(config, condition=condition, tokenizer=tokenizer,
                                train_set=train_set, train_clips=args.clips, cache=latents,
                                condition_cache=features)

    # One untimed batch first: the first call of each conv/attention shape pays for kernel
    # selection and allocator growth, which would land on whichever epoch runs first.
    timings = time_cache(experiment, args.clips, batch, warm_up=True)
    print(f"slowfast-frozen, tiny preset, RANDOM-weight tokenizer and SlowFast (timing only), "
          f"{args.clips} clips of {study.data.frames}x{study.data.resolution}px, batch {batch}, "
          f"{'time-resolved' if config.time_resolved else 'pooled'} features "
          f"({condition.feature_dim}-d), {args.threads} thread(s)")
    print_cache_figures(timings)


if __name__ == "__main__":
    main()
