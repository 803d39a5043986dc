"""What every variant's train entry point shares: options, data, tokenizer, output folder.

    python -m branches.<variant>.train --preset {micro,tiny,full} --output DIR
           [--resume] [--seed N] [--data FILE.npy] [--tokenizer CKPT] [--motion CKPT]
           [--threads N] [--device DEV] [--micro-batch N] [--rehearse]
           [--set KEY=VALUE ...]

The options are checked before anything heavy loads: a bad ``--micro-batch`` or a
``--device`` that does not exist costs no tokenizer download.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.data import Dataset

from orchestrator.overrides import (
    SET_FLAG,
    OverrideError,
    apply_overrides,
    dotted_value,
    parse_overrides,
)
from shared.data import TrajectoryConfig, TrajectoryVideos, VideoFileDataset
from shared.errors import CheckpointError, ConfigError
from shared.evaluation import Evaluator
from shared.latent_cache import ClipCache, default_cache_root
from shared.latent_experiment import weights_fingerprint
from shared.magvit import MagvitTokenizer, load_tokenizer
from shared.presets import STUDY_PRESETS, StudyConfig
from shared.provenance import checkpoint_record, code_digest
from shared.runtime import seed_everything, select_device
from shared.training import Experiment, RunSpec, train

C = TypeVar("C")


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    preset: str
    output: Path
    resume: bool
    seed: int
    data: Path | None
    tokenizer: str | None
    motion: str | None
    threads: int | None
    device: str | None
    micro_batch: int | None = None
    rehearse: bool = False
    eval_data: Path | None = None  # the held-out clips from this file instead
    overrides: dict[str, str] = field(default_factory=dict)  # --set: dotted key -> text

    def configure(self, config: C) -> C:
        """The variant's config with the ``--set`` overrides applied, each typed like the
        field it replaces; a key the config lacks stops the run here, before anything
        loads, naming the nearest keys (exit code 2)."""
        try:
            return apply_overrides(config, self.overrides)[0]
        except OverrideError as e:
            raise ConfigError(str(e)) from None

    def run_spec(self, variant: str) -> RunSpec:
        return RunSpec(variant=variant, preset=self.preset, seed=self.seed,
                       output_dir=self.output, resume=self.resume, device=self.device,
                       threads=self.threads, rehearse=self.rehearse)

    def study_to_run(self, study: StudyConfig) -> StudyConfig:
        """``study`` as this run trains it: ``--micro-batch`` checked against the preset's
        batch and applied, and a rehearsal's cuts. Applying it twice changes nothing, so a
        train module may call it early to fail before it loads anything."""
        train = study.train
        if self.micro_batch is not None:
            if self.micro_batch not in train.micro_batch_choices:
                choices = ", ".join(map(str, train.micro_batch_choices))
                raise ConfigError(
                    f"--micro-batch {self.micro_batch} does not divide the batch of "
                    f"{train.batch_size} clips of preset {study.name!r}: use one of {choices}")
            train = replace(train, micro_batch=self.micro_batch)
        return replace(study, train=train.rehearsal() if self.rehearse else train)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and exit code 2, like every other usage error of the project.
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def parse_train_args(argv: list[str] | None, *, variant: str, description: str) -> TrainArgs:
    parser = _Parser(prog=f"python -m branches.{variant.replace('-', '_')}.train",
                     description=description)
    parser.add_argument("--preset", choices=sorted(STUDY_PRESETS), default="tiny")
    parser.add_argument("--output", type=Path, required=True, help="folder for all outputs")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help=".npy/.npz of uint8 frames instead of the "
                        "trajectory videos")
    parser.add_argument("--eval-data", type=Path, help=".npy/.npz of uint8 frames scored whole "
                        "as the held-out clips (e.g. a benchmark's official test set) instead "
                        "of the eval split")
    parser.add_argument("--tokenizer", help="tokenizer checkpoint: a path or hf://OWNER/REPO/FILE")
    parser.add_argument("--motion", help="motion backbone checkpoint, for variants that use one: "
                        "a path or hf://OWNER/REPO/FILE")
    parser.add_argument("--threads", type=int, help="CPU threads (default: OMP_NUM_THREADS)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N; one that is not there is an "
                        "error (default: CUDA if visible, else the CPU)")
    parser.add_argument("--micro-batch", type=int, metavar="N",
                        help="clips per forward/backward pass; must divide the preset's batch, "
                        "which stays the effective batch (default: the whole batch)")
    parser.add_argument("--rehearse", action="store_true",
                        help="one step at each of two micro-batch sizes (1 and 2 clips) at the "
                        "preset's true shapes, then rehearsal.json with each step's peak memory, "
                        "FLOPs and time")
    parser.add_argument(SET_FLAG, action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the variant's config, by its dotted name "
                        "(e.g. study.train.lr=3e-4); repeatable")
    ns = parser.parse_args(argv)
    try:
        overrides = parse_overrides(ns.set)
    except OverrideError as e:
        raise ConfigError(str(e)) from None
    if ns.seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {ns.seed}")
    if ns.micro_batch is not None and ns.micro_batch < 1:
        raise ConfigError(f"--micro-batch must be at least 1, got {ns.micro_batch}")
    if ns.device is not None:
        select_device(ns.device)  # fails now, before a tokenizer loads, if it is not there
    if ns.rehearse and ns.resume:
        print("--rehearse: --resume ignored, a rehearsal measures from a fresh start",
              file=sys.stderr, flush=True)
    return TrainArgs(preset=ns.preset, output=ns.output, resume=ns.resume, seed=ns.seed,
                     data=ns.data, tokenizer=ns.tokenizer, motion=ns.motion,
                     threads=ns.threads, device=ns.device, micro_batch=ns.micro_batch,
                     rehearse=ns.rehearse, eval_data=ns.eval_data, overrides=overrides)


@dataclass(frozen=True)
class Splits:
    """The clips of a run: train; validation, what per-epoch evaluations and any choice see;
    held_out, what the final numbers come from and nothing chose on."""

    train: Dataset[dict[str, Any]]
    validation: Dataset[dict[str, Any]]
    held_out: Dataset[dict[str, Any]]
    train_clips: int  # training clips actually available (a file may hold fewer)


def build_datasets(
    data: TrajectoryConfig, *, train_clips: int, eval_clips: int, data_file: Path | None,
    validation_clips: int | None = None, eval_file: Path | None = None,
) -> Splits:
    """The trajectory videos' three splits, or a ``data_file``'s three-way split; with
    ``eval_file`` the held-out clips are that whole file."""
    validation_clips = validation_clips or eval_clips
    if data_file is None:
        splits = Splits(TrajectoryVideos(data, split="train", size=train_clips),
                        TrajectoryVideos(data, split="validation", size=validation_clips),
                        TrajectoryVideos(data, split="eval", size=eval_clips), train_clips)
    else:
        def part(split: str, path: Path = data_file) -> VideoFileDataset:
            return VideoFileDataset(path, frames=data.frames,
                                    context_frames=data.context_frames, split=split)

        train = part("train")
        splits = Splits(train, part("validation"), part("eval"), min(train_clips, len(train)))
    if eval_file is not None:
        splits = replace(splits, held_out=VideoFileDataset(
            eval_file, frames=data.frames, context_frames=data.context_frames, split="all"))
    return splits


def load_study_tokenizer(study: StudyConfig, source: str | None) -> MagvitTokenizer:
    source = source or study.tokenizer
    if source is None:
        raise CheckpointError(
            f"preset {study.name!r} needs a pretrained tokenizer: run `python -m "
            f"shared.magvit.pretrain --preset {study.tokenizer_preset} --output DIR` and pass "
            "--tokenizer DIR/tokenizer.ckpt (orch train does this for you)"
        )
    return load_tokenizer(source)


def data_key(study: StudyConfig, data_file: Path | None) -> dict[str, Any]:
    """What identifies the training clips, for cache keys: the generator config or the file's
    content hash (not its path or time stamp, so copies share entries and edits never do)."""
    if data_file is None:
        return {"source": "trajectories", "config": asdict(study.data)}
    digest = hashlib.sha256()
    with open(data_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"source": "file", "sha256": digest.hexdigest(), "frames": study.data.frames,
            "context_frames": study.data.context_frames}


# The modules whose code makes the cached latents, and the cached motion features.
LATENT_CODE = ("shared.magvit", "shared.data", "shared.latent_experiment")
FEATURE_CODE = ("shared.motion", "shared.data", "shared.latent_experiment")


def run_variant(
    args: TrainArgs,
    *,
    variant: str,
    study: StudyConfig,
    build: Callable[..., Experiment],
    variant_config: dict[str, Any],
    cache_key: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything a train entry point does around its own model.

    ``cache_key`` None means nothing frozen is worth caching (a trainable tokenizer). Else the
    latents are cached, keyed by the tokenizer and the data alone (so every variant over the
    same frozen tokenizer shares them), and a non-empty ``cache_key`` (e.g. a frozen motion
    backbone's weights) also caches the condition's features, keyed by it and the data.
    """
    study = args.study_to_run(study)  # --micro-batch and --rehearse, checked before any load
    seed_everything(args.seed)  # before any module is built: the weights' init depends on it
    tokenizer = load_study_tokenizer(study, args.tokenizer)
    splits = build_datasets(
        study.data, train_clips=study.train.train_clips, eval_clips=study.train.eval_clips,
        validation_clips=study.train.val_clips, data_file=args.data, eval_file=args.eval_data,
    )
    train_set, train_clips = splits.train, splits.train_clips
    caches: dict[str, ClipCache | None] = {"cache": None}
    if cache_key is not None:
        data = data_key(study, args.data)
        # The code that renders the clips and computes the entries is part of the key: an
        # edit to the encoder, the renderer or a variant's features never reuses old entries.
        caches["cache"] = ClipCache(default_cache_root(), kind="latents", key={
            "tokenizer": weights_fingerprint(tokenizer), "data": data,
            "code": code_digest(*LATENT_CODE), "torch": torch.__version__})
        if cache_key:
            caches["condition_cache"] = ClipCache(default_cache_root(), kind="features", key={
                "data": data, **cache_key, "torch": torch.__version__,
                "code": code_digest(*FEATURE_CODE, build.__module__)})
    experiment = build(tokenizer=tokenizer, train_set=train_set, train_clips=train_clips,
                       **caches)
    evaluator, validator = (
        Evaluator(dataset, context_frames=study.data.context_frames,
                  batch_size=study.train.eval_batch_size, strip_clips=study.train.strip_clips)
        for dataset in (splits.held_out, splits.validation))
    return train(
        experiment,
        # A --data file may hold fewer clips than the preset trains on.
        config=replace(study.train, train_clips=train_clips),
        run=args.run_spec(variant),
        evaluator=evaluator,
        validator=validator,
        checkpoints=checkpoint_record({"tokenizer": args.tokenizer or study.tokenizer,
                                       "motion": args.motion}),
        run_config={"variant": variant, **variant_config,
                    "overrides": {key: dotted_value(variant_config, key)
                                  for key in args.overrides},
                    "tokenizer_source": args.tokenizer or study.tokenizer,
                    "data_file": str(args.data) if args.data else None,
                    "eval_data_file": str(args.eval_data) if args.eval_data else None},
    )
