"""Train slowfast-frozen: ``python -m branches.slowfast_frozen.train --preset tiny --output DIR
--tokenizer TOK.ckpt --motion DIR/motion.ckpt`` (micro/tiny: the motion checkpoint comes from
``python -m shared.motion.pretrain --backbone slowfast --preset P --output DIR``)."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Any

from branches.slowfast_frozen.config import VARIANT, SlowFastFrozenConfig, slowfast_frozen_config
from branches.slowfast_frozen.model import SlowFastCondition, build_experiment
from shared.entry import parse_train_args, run_variant
from shared.errors import CheckpointError, run_cli
from shared.motion.pretrain import load_motion_backbone, pretrain_command
from shared.motion.slowfast import SlowFastR50


def load_condition(config: SlowFastFrozenConfig, source: str | None) -> SlowFastCondition:
    source = source or config.motion_source
    if source is None:
        preset = config.study.name
        hint = (f"run `{pretrain_command('slowfast', preset)}` and pass --motion DIR/motion.ckpt"
                if preset != "full" else
                "download pytorchvideo's SLOWFAST_8x8_R50.pyth and pass --motion PATH")
        raise CheckpointError(f"preset {preset!r} needs a SlowFast checkpoint: {hint}")
    backbone = load_motion_backbone(source, backbone="slowfast", **config.motion_inputs)
    assert isinstance(backbone, SlowFastR50)
    return SlowFastCondition(backbone, time_resolved=config.time_resolved)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_train_args(argv, variant=VARIANT, description=__doc__ or "")
    config = args.configure(slowfast_frozen_config(args.preset))
    condition = load_condition(config, args.motion)
    return run_variant(
        args,
        variant=VARIANT,
        study=config.study,
        build=partial(build_experiment, config, condition=condition),
        variant_config={**asdict(config), "motion_source": args.motion or config.motion_source,
                        "motion_config": asdict(condition.features.config)},
        cache_key=condition.cache_key if config.cache_features else None,
    )


if __name__ == "__main__":
    run_cli(main)
