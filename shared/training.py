"""The training loop every variant runs through.

A variant describes its model and data as an ``Experiment`` (what is trainable, how a batch
becomes a loss, how the future is predicted from the context); this module does the rest the
same way for all of them: seeding, the optimizer and schedule, mixed precision on CUDA,
``events.jsonl``, a checkpoint after every epoch, ``--resume``, evaluation against the
reference rows, and ``results.json`` (schemas in requirements.md).

Determinism: the order of the training clips in epoch ``e`` comes from a generator seeded
with ``(seed, e)``, and the global RNG states are saved with each checkpoint, so a run that
is killed and resumed from its last checkpoint ends with the same results as one that was
not (on the CPU, where kernels are deterministic).
"""

from __future__ import annotations

import abc
import math
import os
import random
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared import runtime
from shared.checkpoint import save_checkpoint
from shared.errors import CheckpointError, ConfigError, DataError, SharedError
from shared.evaluation import Evaluator
from shared.events import EventLog, write_json_atomic

RESULTS_SCHEMA = 1
LAST_CHECKPOINT = "checkpoints/last.pt"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    train_clips: int
    eval_clips: int
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    log_every: int = 10
    eval_batch_size: int = 16
    strip_clips: int = 4
    amp: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "train_clips", "eval_clips", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Who is running and where: filled from the entry point's options."""

    variant: str
    preset: str
    seed: int
    output_dir: Path
    resume: bool = False
    device: str | None = None
    threads: int | None = None


class Experiment(abc.ABC):
    """What a variant plugs into the loop.

    ``trainable`` holds every module that is trained (it alone is checkpointed and given to
    the optimizer); frozen parts live elsewhere on the experiment and are counted by
    ``frozen_parameters``.
    """

    trainable: nn.Module

    @abc.abstractmethod
    def frozen_modules(self) -> list[nn.Module]:
        """Modules that must never be updated (tokenizer, motion backbone...)."""

    def to(self, device: torch.device) -> None:
        self.trainable.to(device)
        for module in self.frozen_modules():
            module.to(device)

    def prepare(self, log: EventLog) -> None:  # noqa: B027 - optional hook
        """One-off work before training, e.g. filling a latent cache."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups; override to give parts of ``trainable`` their own learning rate
        (a ``lr_scale`` key multiplies the configured rate)."""
        return [{"params": [p for p in self.trainable.parameters() if p.requires_grad]}]

    def epoch_metrics(self) -> dict[str, float]:
        """Extra held-out measurements recorded with each epoch (e.g. a trainable
        tokenizer's own reconstruction quality)."""
        return {}

    @abc.abstractmethod
    def train_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches of the training clips in ``order`` (a permutation of clip indices)."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of a batch and a few floats to log."""

    @abc.abstractmethod
    def predict(self, context_bcthw: torch.Tensor, future_frames: int) -> torch.Tensor:
        """Predicted future frames (B, 3, future_frames, H, W) in [-1, 1] from the context alone."""

    @abc.abstractmethod
    def oracle(self, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor) -> torch.Tensor:
        """The true future through the tokenizer: the best a latent predictor can reach."""

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.trainable.parameters() if p.requires_grad)
        frozen_ids: set[int] = set()
        frozen = 0
        for module in [self.trainable, *self.frozen_modules()]:
            for parameter in module.parameters():
                if not parameter.requires_grad and id(parameter) not in frozen_ids:
                    frozen_ids.add(id(parameter))
                    frozen += parameter.numel()
        return {"trainable": trainable, "frozen": frozen}


@dataclass
class _Progress:
    """Loss and timing since the last progress event."""

    losses: list[float] = field(default_factory=list)
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)


def epoch_order(seed: int, epoch: int, num_clips: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_clips, generator=generator)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _rng_state() -> dict[str, Any]:
    # Plain tensors, ints and tuples only, so the checkpoint loads with weights_only=True.
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _error_kind(error: BaseException) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "oom"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    kinds = (("checkpoint", CheckpointError), ("data", DataError), ("config", ConfigError))
    for kind, cls in kinds:
        if isinstance(error, cls):
            return kind
    return "exception"


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def train(
    experiment: Experiment,
    *,
    config: TrainConfig,
    run: RunSpec,
    evaluator: Evaluator,
    run_config: dict[str, Any],
) -> dict[str, Any]:
    """Train, evaluate and write results; returns the results record."""
    output_dir = run.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(output_dir / "events.jsonl")
    # The orchestrator stops a job with SIGTERM to its process group: make that an orderly
    # interruption (an error event, checkpoints intact) instead of a silent death.
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _train(experiment, config=config, run=run, evaluator=evaluator,
                      run_config=run_config, log=log)
    except BaseException as error:
        if not isinstance(error, SystemExit):
            user_error = isinstance(error, (SharedError, KeyboardInterrupt))
            tail = "" if user_error else traceback.format_exc()
            text = str(error).strip()
            message = text.splitlines()[0] if text else type(error).__name__
            log.emit("error", message=message, kind=_error_kind(error), traceback=tail[-4000:])
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _train(
    experiment: Experiment,
    *,
    config: TrainConfig,
    run: RunSpec,
    evaluator: Evaluator,
    run_config: dict[str, Any],
    log: EventLog,
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    threads = runtime.configure_threads(run.threads)
    device = runtime.select_device(run.device)
    precision = runtime.select_precision(device.type, enabled=config.amp)
    runtime.seed_everything(run.seed)

    experiment.to(device)
    for module in experiment.frozen_modules():
        module.eval()
        module.requires_grad_(False)
    groups = experiment.param_groups()
    for group in groups:
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
    parameters = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    scaler = torch.amp.GradScaler("cuda", enabled=precision.needs_grad_scaler)
    steps_per_epoch = math.ceil(config.train_clips / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, total_steps=total_steps, warmup_steps=config.warmup_steps,
                               min_ratio=config.min_lr_ratio),
    )

    checkpoint_path = run.output_dir / LAST_CHECKPOINT
    start_epoch, history, train_seconds = 1, [], 0.0
    if run.resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        experiment.trainable.load_state_dict(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        train_seconds = state["train_seconds"]
    elif run.resume:
        print(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch", flush=True)

    log.emit("start", variant=run.variant, preset=run.preset, seed=run.seed, device=str(device),
             epochs=config.epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
             resumed_from_epoch=start_epoch - 1, pid=os.getpid())
    experiment.prepare(log)

    step = (start_epoch - 1) * steps_per_epoch
    thread_budget = runtime.ThreadBudget()
    model_row: dict[str, Any] | None = None  # the model's last eval row, reused at the end
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        experiment.trainable.train()
        order = epoch_order(run.seed, epoch, config.train_clips)
        progress, epoch_losses, epoch_logs = _Progress(), [], []
        for batch in experiment.train_batches(order, config.batch_size):
            with precision.autocast():
                loss, logs = experiment.loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}: "
                                         "lower the learning rate or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            if (granted := thread_budget.poll()) is not None:
                print(f"threads: now {granted} (cores freed by ended jobs)", flush=True)
            progress.losses.append(loss.item())
            epoch_losses.append(loss.item())
            epoch_logs.append(logs)
            progress.samples += _batch_size(batch)
            if step % config.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - progress.started
                seconds_per_step = elapsed / max(1, len(progress.losses))
                record = log.emit(
                    "progress", epoch=epoch, step=step, total_steps=total_steps,
                    loss=sum(progress.losses) / len(progress.losses),
                    samples_per_s=progress.samples / max(elapsed, 1e-9),
                    eta_s=seconds_per_step * (total_steps - step),
                    lr=optimizer.param_groups[0]["lr"], memory_mb=runtime.peak_memory_mb(device),
                )
                print(f"epoch {epoch} step {step}/{total_steps} loss {record['loss']:.4f} "
                      f"{record['samples_per_s']:.1f} samples/s eta {record['eta_s']:.0f}s",
                      flush=True)
                progress = _Progress()
        train_seconds += time.perf_counter() - epoch_start

        model_row = evaluator.evaluate_model(experiment)
        metrics = {key: value for key, value in model_row.items() if key != "per_frame"}
        extra = experiment.epoch_metrics()
        log.emit("eval", epoch=epoch, metrics=metrics, **({"extra": extra} if extra else {}))
        history.append({
            "epoch": epoch,
            "train_loss": sum(epoch_losses) / max(1, len(epoch_losses)),
            "train_logs": _mean_logs(epoch_logs),
            "eval": metrics,
            "extra": extra,
            "seconds": time.perf_counter() - epoch_start,
        })
        print(f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, eval PSNR "
              f"{metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}", flush=True)
        save_checkpoint(checkpoint_path, {
            "epoch": epoch,
            "trainable": experiment.trainable.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "history": history,
            "train_seconds": train_seconds,
        })
        log.emit("checkpoint", epoch=epoch, path=LAST_CHECKPOINT)

    # The last epoch's row is the final model's: no second pass over the held-out clips.
    final = evaluator.evaluate_all(experiment, model_row=model_row)
    strip_path = evaluator.save_strip(experiment, run.output_dir / "frames.png")
    samples_seen = config.epochs * config.train_clips
    results = {
        "schema": RESULTS_SCHEMA,
        "variant": run.variant,
        "preset": run.preset,
        "seed": run.seed,
        "status": "success",
        "config": run_config | {"train": asdict(config)},
        "environment": runtime.environment(device, threads),
        "parameters": experiment.parameter_counts(),
        "history": history,
        "final": final,
        "timings": {
            "wall_s": time.perf_counter() - wall_start,
            "train_s": train_seconds,
            "samples_per_s": samples_seen / max(train_seconds, 1e-9),
            "peak_memory_mb": runtime.peak_memory_mb(device),
        },
        "artifacts": {"checkpoint": LAST_CHECKPOINT, "frames": strip_path.name},
    }
    write_json_atomic(run.output_dir / "results.json", results)
    log.emit("end", status="success", wall_s=results["timings"]["wall_s"], results="results.json")
    return results


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for entry in logs for key in entry}
    return {key: sum(e[key] for e in logs if key in e) / sum(key in e for e in logs)
            for key in sorted(keys)}


def _batch_size(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    return 0
