"""Pretrain a narrow motion backbone (SlowFast or I3D) on the trajectory classes (CPU, minutes).

    python -m shared.motion.pretrain --backbone {slowfast,i3d} --preset {micro,tiny}
        --output DIR [--seed N] [--threads N] [--time-limit S] [--max-steps N]

Writes ``DIR/motion.ckpt`` in the public layout of the backbone (SlowFast: the pytorchvideo
wrapper ``{"model_state": state_dict, "config": ..., ...}``; I3D: a bare state dict, like the
piergiaj files), ``DIR/motion.json`` (the backbone config that rebuilds it),
``DIR/metrics.json`` (held-out accuracy, loss history, timings) and ``DIR/events.jsonl``
(progress as it goes, the held-out accuracy at the end: what orch's live view shows).
``load_motion_backbone`` rebuilds the model from either file; ``load_slowfast`` /
``load_i3d`` load it strictly when given that config.

Why this exists: no Kinetics or ImageNet weights can be downloaded here, and a frozen backbone
with random weights is not a motion feature extractor. The trajectory videos carry a label (the
path class: linear, circular, parabolic, zigzag; chance 25 %), which is a motion property, so a
backbone trained to classify it has to encode how things move. The ``full`` preset instead means
the official checkpoints (SlowFast: pytorchvideo ``SLOWFAST_8x8_R50.pyth``; I3D:
``rgb_imagenet.pt``). The project's references name no hub repository that holds them, so the
user downloads one and passes ``--motion PATH``.

Design choices:
- The backbone sees exactly what a variant feeds it: the CONTEXT frames of the study preset
  (``study_preset(p).data.context_frames``), through the same input module (``SlowFastFeatures``
  / ``I3DFeatures``), so its BatchNorm statistics and filters fit the variant's inputs. I3D needs
  at least 9 frames: shorter clips (the micro study's 5) get whole frames repeated first
  (``select_frames``), which is what ``I3DFeatures`` does itself for clips it accepts.
- Every step draws fresh clips (the generator is a pure function of the index), so the tiny run
  never sees a clip twice and the held-out accuracy measures motion, not memory. The micro run
  instead cycles a few clips: it exists for tests, which need a loss that surely falls in
  seconds.
- Classes: ``num_classes`` is set to the 4 trajectory classes whatever the preset says, and the
  classifier is the backbone's own head (``blocks.6.proj`` / ``logits``), so the file keeps the
  public key names. Cross-entropy, AdamW, linear warm-up then cosine decay.
- The budget is a step cap and a wall-time cap (the tiny preset: 2.5 minutes of training, about
  3 in all); the learning rate follows the larger of the two fractions. These nets are small:
  run them with ``--threads 1`` on a shared machine, where a second thread slows each step
  down (README, "Results so far").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared.checkpoint import read_checkpoint, resolve_checkpoint, save_checkpoint
from shared.data import TRAJECTORY_CLASSES, TrajectoryConfig, TrajectoryVideos
from shared.errors import CheckpointError, ConfigError, run_cli
from shared.motion.i3d import MIN_FRAMES, I3DConfig, I3DFeatures, InceptionI3d, i3d_config, load_i3d
from shared.motion.inputs import select_frames
from shared.motion.slowfast import (
    SlowFastConfig,
    SlowFastFeatures,
    SlowFastR50,
    load_slowfast,
    slowfast_config,
)
from shared.presets import study_preset
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

BACKBONES: tuple[str, ...] = ("slowfast", "i3d")
CHECKPOINT_NAME = "motion.ckpt"
CONFIG_NAME = "motion.json"
# The config each backbone is rebuilt with when a file carries none: the public checkpoints.
OFFICIAL_PRESETS: dict[str, str] = {"slowfast": "kinetics400", "i3d": "imagenet"}


@dataclass(frozen=True, kw_only=True)
class MotionPretrainConfig(StepBudgetFields):
    name: str  # study preset: decides the data (and so the context length)
    backbone: str  # "slowfast" or "i3d"
    backbone_preset: str  # preset of shared.motion.slowfast / shared.motion.i3d
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_steps: int = 10
    final_lr_ratio: float = 0.05
    max_steps: int = 1_000_000
    time_limit_s: float = 1e9  # training stops at this wall time (evaluation comes after)
    train_clips: int = 1_000_000  # distinct training clips, cycled; large = always fresh clips
    eval_clips: int = 256
    eval_batch_size: int = 64
    grad_clip: float = 1.0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
        for field in ("batch_size", "max_steps", "train_clips", "eval_clips", "log_every"):
            if getattr(self, field) < 1:
                raise ConfigError(
                    f"motion pretrain {field} must be >= 1, got {getattr(self, field)}"
                )
        if not self.lr > 0:
            raise ConfigError(f"motion pretrain lr must be positive, got {self.lr}")


def _micro(backbone: str) -> MotionPretrainConfig:
    # Seconds, for tests: a few steps over 16 cycled clips (the loss must fall, not generalise).
    return MotionPretrainConfig(
        name="micro", backbone=backbone, backbone_preset="micro", batch_size=8, lr=3e-3,
        warmup_steps=2, max_steps=16, train_clips=16, eval_clips=32, eval_batch_size=32,
        log_every=4,
    )


def _tiny(backbone: str) -> MotionPretrainConfig:
    # About 2.5 minutes of training; on a busy machine fewer steps fit, the wall time stays.
    return MotionPretrainConfig(
        name="tiny", backbone=backbone, backbone_preset="tiny", batch_size=32, lr=2e-3,
        warmup_steps=20, max_steps=600, time_limit_s=150.0, eval_clips=512,
    )


PRETRAIN_PRESETS: dict[str, Callable[[str], MotionPretrainConfig]] = {
    "micro": _micro,
    "tiny": _tiny,
}


def motion_pretrain_config(preset: str, backbone: str) -> MotionPretrainConfig:
    if preset not in PRETRAIN_PRESETS:
        raise ConfigError(
            f"unknown motion pretrain preset {preset!r}: choose one of "
            f"{', '.join(PRETRAIN_PRESETS)} (for full, pass the official checkpoint with --motion)"
        )
    return PRETRAIN_PRESETS[preset](backbone)


def pretrain_command(backbone: str, preset: str) -> str:
    """The command that writes the checkpoint a variant needs, for error messages."""
    return f"python -m shared.motion.pretrain --backbone {backbone} --preset {preset} --output DIR"


# --------------------------------------------------------------------------------------------
# Configs and checkpoints


def backbone_config(backbone: str, preset: str, **overrides: Any) -> SlowFastConfig | I3DConfig:
    if backbone == "slowfast":
        return slowfast_config(preset, **overrides)
    if backbone == "i3d":
        return replace(i3d_config(preset), **overrides)
    raise ConfigError(f"backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")


def config_from_dict(backbone: str, fields: dict[str, Any]) -> SlowFastConfig | I3DConfig:
    """Rebuild a config saved with ``asdict`` (JSON turns its tuples into lists)."""
    cls = SlowFastConfig if backbone == "slowfast" else I3DConfig
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise CheckpointError(
            f"the saved {backbone} config has unknown fields {unknown}: re-run the pretraining"
        )
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return cls(**values)


def build_backbone(config: SlowFastConfig | I3DConfig) -> SlowFastR50 | InceptionI3d:
    if isinstance(config, SlowFastConfig):
        return SlowFastR50(config)
    return InceptionI3d(config)


def save_motion_checkpoint(
    model: SlowFastR50 | InceptionI3d,
    directory: Path,
    *,
    preset: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``directory/motion.ckpt`` in the public layout and ``directory/motion.json``."""
    backbone = "slowfast" if isinstance(model, SlowFastR50) else "i3d"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    described = {"backbone": backbone, "preset": preset, "config": asdict(model.config),
                 **(extra or {})}
    directory.mkdir(parents=True, exist_ok=True)
    if backbone == "slowfast":
        # pytorchvideo's wrapper; load_slowfast reads only model_state, so extra keys are safe.
        path = save_checkpoint(directory / CHECKPOINT_NAME, {"model_state": state, **described})
    else:
        # The piergiaj files are bare state dicts: the config can only live next to it.
        path = save_checkpoint(directory / CHECKPOINT_NAME, state)
    (directory / CONFIG_NAME).write_text(json.dumps(described, indent=2) + "\n")
    return path


def saved_config(source: str | os.PathLike[str], payload: Any, backbone: str
                 ) -> SlowFastConfig | I3DConfig | None:
    """The config a pretrained file was written with: its ``config`` entry, else a
    ``motion.json`` (or ``<name>.json``) beside a local file, else None (an official file)."""
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict):
        return config_from_dict(backbone, payload["config"])
    text = os.fspath(source)
    if text.startswith("hf://"):
        return None
    path = resolve_checkpoint(text)
    for candidate in (path.with_suffix(".json"), path.parent / CONFIG_NAME):
        if candidate.is_file():
            described = json.loads(candidate.read_text())
            if described.get("backbone") not in (None, backbone):
                raise CheckpointError(
                    f"{candidate} describes a {described['backbone']} backbone, not {backbone}: "
                    f"pass a {backbone} checkpoint"
                )
            return config_from_dict(backbone, described["config"])
    return None


def load_motion_backbone(
    source: str | os.PathLike[str], *, backbone: str, **input_overrides: Any
) -> SlowFastR50 | InceptionI3d:
    """Load a motion backbone strictly, in eval mode, with the config its file was written with
    (an official file: the official config). ``input_overrides`` change input conventions only
    (e.g. ``fast_frames``, ``image_size``), never a field that shapes the weights."""
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    payload = read_checkpoint(source) if backbone == "slowfast" else None
    config = saved_config(source, payload, backbone) or backbone_config(
        backbone, OFFICIAL_PRESETS[backbone])
    config = replace(config, **input_overrides)
    if isinstance(config, SlowFastConfig):
        return load_slowfast(source, config=config)
    return load_i3d(source, config=config)


def features_module(model: SlowFastR50 | InceptionI3d, *, frozen: bool,
                    time_resolved: bool = False) -> SlowFastFeatures | I3DFeatures:
    """The module that owns the backbone's input conventions."""
    if isinstance(model, SlowFastR50):
        return SlowFastFeatures(model, frozen=frozen, time_resolved=time_resolved)
    return I3DFeatures(model, frozen=frozen, time_resolved=time_resolved)


def fit_frames(model: SlowFastR50 | InceptionI3d, video_bcthw: Tensor) -> Tensor:
    """I3D refuses clips under 9 frames: repeat whole frames up to its input length first."""
    if isinstance(model, InceptionI3d) and video_bcthw.shape[2] < MIN_FRAMES:
        return select_frames(video_bcthw, model.config.num_frames or MIN_FRAMES)
    return video_bcthw


class MotionClassifier(nn.Module):
    """Context clip (B, 3, Tc, H, W) in [-1, 1] -> class logits (B, num_classes), through the
    backbone's input module and its own classifier head."""

    def __init__(self, model: SlowFastR50 | InceptionI3d) -> None:
        super().__init__()
        self.model = model
        self.features = features_module(model, frozen=False)

    def forward(self, context_bcthw: Tensor) -> Tensor:
        features_bc = self.features(fit_frames(self.model, context_bcthw))
        if isinstance(self.model, SlowFastR50):
            return self.model.blocks[6](features_bc)
        return self.model.classify(features_bc)


# --------------------------------------------------------------------------------------------
# Training


def _context_batch(dataset: Any, indices: list[int], context_frames: int) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in indices]
    video = torch.stack([item["video"][:, :context_frames] for item in items])
    return video, torch.tensor([int(item["label"]) for item in items])


@torch.no_grad()
def evaluate(classifier: MotionClassifier, dataset: Any, config: MotionPretrainConfig,
             context_frames: int, num_classes: int) -> dict[str, Any]:
    correct = torch.zeros(num_classes)
    total = torch.zeros(num_classes)
    losses = []
    with eval_mode(classifier):
        for start in range(0, config.eval_clips, config.eval_batch_size):
            indices = list(range(start, min(start + config.eval_batch_size, config.eval_clips)))
            video, labels = _context_batch(dataset, indices, context_frames)
            logits = classifier(video)
            losses.append(F.cross_entropy(logits, labels, reduction="sum"))
            hits = (logits.argmax(1) == labels).float()
            correct.index_add_(0, labels, hits)
            total.index_add_(0, labels, torch.ones_like(hits))
    return {
        "accuracy": float(correct.sum() / total.sum()),
        "loss": float(torch.stack(losses).sum() / total.sum()),
        "per_class_accuracy": (correct / total.clamp(min=1)).tolist(),
        "clips": int(total.sum()),
    }


def pretrain(
    config: MotionPretrainConfig,
    *,
    output: Path,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    events: PretrainRun | None = None,
) -> dict[str, Any]:
    """Train, evaluate, write ``output/motion.ckpt``, ``motion.json``, ``metrics.json`` and
    the events (to ``events``, by default ``output/events.jsonl``)."""
    events = events or PretrainRun(output, config.budget)
    wall_start = time.perf_counter()
    threads = configure_threads(threads)
    seed_everything(seed)
    data = study_preset(config.name).data
    classes = [c for c in TRAJECTORY_CLASSES if c in data.classes]
    model_config = _pretraining_backbone_config(config, num_classes=len(TRAJECTORY_CLASSES))
    model = build_backbone(model_config)
    classifier = MotionClassifier(model).train()
    train_set = TrajectoryVideos(data, split="train", size=config.train_clips)
    # The validation split: the held-out one is the study's report's alone.
    eval_set = TrajectoryVideos(data, split="validation", size=config.eval_clips)
    n_params = sum(p.numel() for p in model.parameters())
    log(_run_summary(config, data, classes, n_params, threads))
    events.start(preset=config.name, seed=seed, device="cpu", epochs=1, threads=threads,
                 batch_size=config.batch_size)
    history, step, train_s = _train(classifier, train_set, config, data.context_frames, log,
                                    events)

    log(f"evaluating on {config.eval_clips} held-out clips (eval split)")
    held_out = evaluate(classifier, eval_set, config, data.context_frames, len(TRAJECTORY_CLASSES))
    events.eval(epoch=1, metrics={"accuracy": held_out["accuracy"], "loss": held_out["loss"]})
    model.eval()
    checkpoint = save_motion_checkpoint(model, output, preset=config.name)
    wall_s = time.perf_counter() - wall_start
    metrics = {
        "backbone": config.backbone,
        "preset": config.name,
        "seed": seed,
        "steps": step,
        "clips_seen": step * config.batch_size,
        "accuracy": held_out["accuracy"],
        "chance": 1 / len(classes),
        "eval": held_out,
        "classes": list(TRAJECTORY_CLASSES),
        "context_frames": data.context_frames,
        "history": history,
        "timings": {"wall_s": wall_s, "train_s": train_s,
                    "clips_per_s": step * config.batch_size / max(train_s, 1e-9)},
        "environment": environment(torch.device("cpu"), threads),
        "parameters": n_params,
        "feature_dim": model_config.feature_dim,
        "checkpoint": checkpoint.name,
        "config": asdict(config),
        "backbone_config": asdict(model_config),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(
        f"done: {step} steps in {train_s:.0f} s (wall {wall_s:.0f} s), held-out accuracy "
        f"{held_out['accuracy']:.1%} (chance {1 / len(classes):.0%}) -> {checkpoint}"
    )
    events.end(results=None)  # its figures are in metrics.json, not a results.json
    return metrics


def _run_summary(config: MotionPretrainConfig, data: TrajectoryConfig, classes: list[str],
                 n_params: int, threads: int) -> str:
    return (
        f"motion pretrain {config.backbone}/{config.name}: {n_params / 1e6:.2f} M params, "
        f"{data.context_frames}-frame context clips at {data.resolution} px, classes "
        f"{', '.join(classes)} (chance {1 / len(classes):.0%}), batch {config.batch_size}, "
        f"{threads} threads, budget {config.max_steps} steps / {config.time_limit_s:.0f} s"
    )


def _pretraining_backbone_config(config: MotionPretrainConfig, *, num_classes: int
                                 ) -> SlowFastConfig | I3DConfig:
    """The backbone preset with a head for the trajectory classes."""
    overrides: dict[str, Any] = {"num_classes": num_classes}
    if config.backbone == "i3d":
        # The published momentum (0.01) suits long runs; after a few hundred steps from scratch
        # the running statistics would still be mostly their initial values.
        overrides["bn_momentum"] = 0.1
    return backbone_config(config.backbone, config.backbone_preset, **overrides)


def _train(
    classifier: MotionClassifier,
    train_set: TrajectoryVideos,
    config: MotionPretrainConfig,
    context_frames: int,
    log: Callable[[str], None],
    events: PretrainRun,
) -> tuple[list[dict[str, float]], int, float]:
    """Cross-entropy steps on the training clips, cycled in order, until the budget is spent;
    returns (the logged loss and accuracy history, steps, seconds of training)."""
    parameters = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    running_loss, running_hits, running_count = 0.0, 0.0, 0
    train_start = time.perf_counter()
    step = 0
    for _ in budget_steps(config.budget, optimizer, log):
        first = step * config.batch_size
        indices = [(first + i) % config.train_clips for i in range(config.batch_size)]
        video, labels = _context_batch(train_set, indices, context_frames)
        logits = classifier(video)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower the lr")
        clipped_step(optimizer, loss, parameters, config.grad_clip)
        step += 1
        running_loss += float(loss.detach()) * len(labels)
        running_hits += float((logits.argmax(1) == labels).sum())
        running_count += len(labels)
        if step % config.log_every == 0 or step == config.max_steps:
            seconds = time.perf_counter() - train_start
            history.append({"step": step, "loss": running_loss / running_count,
                            "accuracy": running_hits / running_count, "seconds": seconds})
            log(
                f"step {step:4d} | loss {history[-1]['loss']:.4f} | train acc "
                f"{history[-1]['accuracy']:.1%} | lr {optimizer.param_groups[0]['lr']:.2e} | "
                f"{step * config.batch_size / seconds:.1f} clips/s | {seconds:.0f} s"
            )
            events.budget_progress(step=step, seconds=seconds, loss=history[-1]["loss"],
                                   lr=optimizer.param_groups[0]["lr"],
                                   samples_per_s=step * config.batch_size / seconds)
            running_loss, running_hits, running_count = 0.0, 0.0, 0
    return history, step, time.perf_counter() - train_start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m shared.motion.pretrain", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--backbone", required=True, choices=BACKBONES)
    parser.add_argument("--preset", required=True, choices=sorted(PRETRAIN_PRESETS))
    parser.add_argument("--output", required=True, type=Path)
    add_run_options(parser)
    args = parser.parse_args(argv)
    config = with_budget_options(motion_pretrain_config(args.preset, args.backbone), args)
    # As a context, the events end with an error event when the run fails.
    events = PretrainRun(args.output, config.budget)
    with events:
        return pretrain(config, output=args.output, seed=args.seed, threads=args.threads,
                        events=events)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_cli(main)
