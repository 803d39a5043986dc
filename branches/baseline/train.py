"""Train the baseline: ``python -m branches.baseline.train --preset tiny --output DIR``."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from branches.baseline.config import VARIANT, baseline_config
from branches.baseline.model import build_experiment
from shared.entry import build_datasets, data_key, load_study_tokenizer, parse_train_args
from shared.errors import run_cli
from shared.evaluation import Evaluator
from shared.latent_cache import ClipCache, default_cache_root
from shared.latent_experiment import tokenizer_fingerprint
from shared.runtime import seed_everything
from shared.training import train


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_train_args(argv, variant=VARIANT, description=__doc__ or "")
    config = baseline_config(args.preset)
    seed_everything(args.seed)  # before any module is built: the weights' init depends on it
    study = config.study
    tokenizer = load_study_tokenizer(study, args.tokenizer)
    train_set, eval_set, train_clips = build_datasets(
        study.data, train_clips=study.train.train_clips, eval_clips=study.train.eval_clips,
        data_file=args.data,
    )
    cache = None
    if config.cache_latents:
        cache = ClipCache(default_cache_root(), kind="latents", key={
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "data": data_key(study, args.data),
        })
    experiment = build_experiment(config, tokenizer=tokenizer, train_set=train_set,
                                  train_clips=train_clips, cache=cache)
    train_config = replace(study.train, train_clips=train_clips)  # a --data file may be short
    evaluator = Evaluator(eval_set, context_frames=study.data.context_frames,
                          batch_size=study.train.eval_batch_size,
                          strip_clips=study.train.strip_clips)
    return train(experiment, config=train_config, run=args.run_spec(VARIANT),
                 evaluator=evaluator,
                 run_config={"variant": VARIANT, **asdict(config),
                             "tokenizer_source": args.tokenizer or study.tokenizer,
                             "data_file": str(args.data) if args.data else None})


if __name__ == "__main__":
    run_cli(main)
