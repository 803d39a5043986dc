"""Train the baseline: ``python -m branches.baseline.train --preset tiny --output DIR``."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from branches.baseline.config import VARIANT, baseline_config
from branches.baseline.model import build_experiment
from shared.entry import parse_train_args, run_variant
from shared.errors import run_cli


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_train_args(argv, variant=VARIANT, description=__doc__ or "")
    config = args.configure(baseline_config(args.preset))
    return run_variant(
        args,
        variant=VARIANT,
        study=config.study,
        build=partial(build_experiment, config),
        variant_config=asdict(config),
        cache_key={} if config.cache_latents else None,
    )


if __name__ == "__main__":
    run_cli(main)
