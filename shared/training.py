"""The training loop every variant runs through.

A variant describes its model and data as an ``Experiment`` (``shared.experiment``: what is
trainable, how a batch becomes a loss, how the future is predicted from the context); this
module does the rest the same way for all of them: seeding, the optimizer and schedule, mixed
precision on CUDA, ``events.jsonl``, a checkpoint after every epoch, ``--resume``, evaluation
against the reference rows, and ``results.json`` (schemas in requirements.md).

A batch of ``batch_size`` clips may go through the model in micro-batches of ``micro_batch``
clips: each micro-batch's loss is weighted by its share of the batch's clips before its
backward, so the gradients add up to the batch's and one optimizer step follows; a loss that
is a mean over clips gives the same training to float rounding, at the memory of a
micro-batch. A rehearsal (``RunSpec.rehearse``) takes one optimizer step at each of two
micro-batch sizes at the true shapes, with the optimizer's state allocated before them, and
writes what each costs to ``rehearsal.json``.

Determinism: the order of the training clips in epoch ``e`` comes from a generator seeded
with ``(seed, e)``, and the global RNG states are saved with each checkpoint, so a run that
is killed and resumed from its last checkpoint ends with the same results as one that was
not (on the CPU, where kernels are deterministic).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestrator.client import Run
from orchestrator.formats import RESULTS_SCHEMA
from orchestrator.formats.results import FRAME_STRIP_CAPTION
from shared import attention, provenance, runtime
from shared.checkpoint import read_checkpoint, save_checkpoint
from shared.data import LoaderSettings
from shared.errors import CheckpointError, ConfigError, DataError, OutOfMemory, SharedError
from shared.evaluation import Evaluator
from shared.experiment import Experiment
from shared.rehearsal import (
    REHEARSAL_EVAL_CLIPS,
    REHEARSAL_FILE,
    REHEARSAL_POINTS,
    RehearsalMeter,
    StepMeter,
    write_rehearsal,
)

LAST_CHECKPOINT = "checkpoints/last.pt"
PER_FRAME_SERIES = ("psnr", "ssim", "sharpness")  # the per-frame curves results.json carries
EVAL_PRECISIONS = ("fp32", "amp")


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
    micro_batch: int | None = None  # clips per forward and backward; None: the whole batch
    loader_workers: int = 0  # DataLoader processes making training batches; 0: the loop's thread
    # The held-out evaluation: after every ``eval_every`` epochs and always after the last.
    # ``eval_precision``: "fp32", or "amp", the autocast the training runs under (bf16 or
    # fp16 on CUDA, fp32 on a CPU run); the frozen networks' encodes (the latent cache) run in
    # it too, so a predictor is scored on the codes it was trained on. Metrics are computed
    # in fp32 from the decoded frames either way.
    eval_every: int = 1
    eval_precision: str = "fp32"
    # Clips of the validation split each epoch is evaluated on (None: eval_clips); the final
    # numbers come from eval_clips of the held-out split, which no choice has seen.
    validation_clips: int | None = None
    # A rehearsal's config: the run it stands for (its epochs, optimizer steps per epoch,
    # held-out clips).
    run_epochs: int | None = None
    run_steps_per_epoch: int | None = None
    run_eval_clips: int | None = None

    def __post_init__(self) -> None:
        if self.loader_workers < 0:
            raise ConfigError(f"train.loader_workers must be >= 0, got {self.loader_workers}")
        if self.eval_precision not in EVAL_PRECISIONS:
            raise ConfigError(f"train.eval_precision must be one of {', '.join(EVAL_PRECISIONS)}, "
                              f"got {self.eval_precision!r}")
        for name in ("epochs", "batch_size", "train_clips", "eval_clips", "log_every",
                     "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        if self.micro_batch is not None and self.micro_batch not in self.micro_batch_choices:
            raise ConfigError(f"train.micro_batch={self.micro_batch} must divide "
                              f"train.batch_size={self.batch_size}")

    @property
    def val_clips(self) -> int:
        return self.validation_clips or self.eval_clips

    @property
    def micro_batch_size(self) -> int:
        """Clips per forward and backward pass."""
        return self.micro_batch or self.batch_size

    @property
    def accumulation(self) -> int:
        """Micro-batches whose gradients add up to one optimizer step."""
        return self.batch_size // self.micro_batch_size

    @property
    def micro_batch_choices(self) -> list[int]:
        """The micro-batch sizes that divide the batch: the effective batch stays the same."""
        return [n for n in range(1, self.batch_size + 1) if self.batch_size % n == 0]

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the held-out clips are scored after ``epoch`` (1-based)."""
        return epoch % self.eval_every == 0 or epoch >= self.epochs

    @property
    def evaluations(self) -> int:
        """Held-out evaluations of the model in a run from scratch."""
        return sum(map(self.evaluates_after, range(1, self.epochs + 1)))

    @property
    def run_evaluations(self) -> int | None:
        """A rehearsal's config: the evaluations of the run it stands for."""
        return replace(self, epochs=self.run_epochs).evaluations if self.run_epochs else None

    @property
    def rehearsal_micro_batches(self) -> list[int]:
        """The micro-batch sizes a rehearsal takes one step at: the smallest that divide the
        batch (1 and 2, or 1 alone)."""
        return self.micro_batch_choices[:REHEARSAL_POINTS]

    def rehearsal(self) -> TrainConfig:
        """This config cut to a rehearsal's length: one epoch of the clips of its largest
        measured step (the smaller steps take the first of them), one held-out clip (also the
        strip's). Shapes, model and the real run's micro-batch stay as they are, so the memory
        and the cost of a step are the run's."""
        if self.run_epochs is not None:
            return self  # already cut
        return replace(self, epochs=1, train_clips=max(self.rehearsal_micro_batches),
                       run_epochs=self.epochs,
                       run_steps_per_epoch=math.ceil(self.train_clips / self.batch_size),
                       run_eval_clips=self.eval_clips,
                       eval_clips=min(self.eval_clips, REHEARSAL_EVAL_CLIPS),
                       validation_clips=min(self.val_clips, REHEARSAL_EVAL_CLIPS),
                       strip_clips=min(self.strip_clips, REHEARSAL_EVAL_CLIPS))


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
    rehearse: bool = False  # also write rehearsal.json; config: a TrainConfig.rehearsal()


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


def _is_oom(error: BaseException) -> bool:
    # Older CUDA paths raise a plain RuntimeError whose message says so.
    return isinstance(error, RuntimeError) and (
        isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower())


def _error_kind(error: BaseException) -> str:
    if _is_oom(error):
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
    checkpoints: dict[str, dict[str, str]] | None = None,
    validator: Evaluator | None = None,
) -> dict[str, Any]:
    """Train, evaluate and write results; returns the results record. ``validator`` scores
    the model after each evaluated epoch (the validation split: what choices may look at);
    ``evaluator`` gives the final numbers (the held-out split); None: the evaluator does
    both. ``checkpoints``: the checkpoints the run loaded, for provenance."""
    output_dir = run.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    log = Run(output_dir)  # events.jsonl now, results.json at the end
    # The orchestrator stops a job with SIGTERM to its process group: make that an orderly
    # interruption (an error event, checkpoints intact) instead of a silent death.
    previous_handler = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return _train(experiment, config=config, run=run, evaluator=evaluator,
                      validator=validator, run_config=run_config, log=log,
                      checkpoints=checkpoints or {})
    except BaseException as error:
        if not isinstance(error, SystemExit):
            user_error = isinstance(error, (SharedError, KeyboardInterrupt))
            tail = "" if user_error else traceback.format_exc()
            log.error(_first_line(error), kind=_error_kind(error), traceback_text=tail)
        if _is_oom(error):  # one line and exit code 5: orch retries with a smaller micro-batch
            raise OutOfMemory(f"out of memory at --micro-batch {config.micro_batch_size} "
                              f"({_first_line(error)}): retry with a smaller --micro-batch"
                              ) from error
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _train(
    experiment: Experiment,
    *,
    config: TrainConfig,
    run: RunSpec,
    evaluator: Evaluator,
    validator: Evaluator | None,
    run_config: dict[str, Any],
    log: Run,
    checkpoints: dict[str, dict[str, str]],
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    attention.forget_kernels_used()  # this run's, not an earlier one's in the same process
    threads = runtime.configure_threads(run.threads)
    device = runtime.select_device(run.device)
    precision = (runtime.rehearsal_precision if run.rehearse else runtime.select_precision)(
        device.type, enabled=config.amp)
    runtime.seed_everything(run.seed)

    _place(experiment, device)
    # No more workers than the cores this process may use: more only queue for them.
    experiment.loader = LoaderSettings(workers=min(config.loader_workers, runtime.usable_cores()),
                                       pin_memory=device.type == "cuda")
    # Passes without gradients (frozen encodes, evaluation) in the stated precision.
    inference = (precision if config.eval_precision == "amp"
                 else runtime.Precision(device.type, None, False))
    experiment.inference = inference
    if run.rehearse:
        # One step per measured micro-batch size, no accumulation: accumulating would not
        # change the peak of a micro-step.
        steps_per_epoch = len(config.rehearsal_micro_batches)
    else:
        steps_per_epoch = math.ceil(config.train_clips / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _Optimizer.for_experiment(experiment, config, precision, total_steps=total_steps)
    if run.rehearse:
        # The first step's backward then already holds what every later one holds (the
        # AdamW moments), so each measured step shows the real peak.
        optimizer.allocate_state()
    checkpoint_path = run.output_dir / LAST_CHECKPOINT
    start_epoch, history, train_seconds = _resume(  # a rehearsal measures from scratch
        checkpoint_path, experiment, optimizer, resume=run.resume and not run.rehearse)

    log.emit("start", variant=run.variant, preset=run.preset, seed=run.seed, device=str(device),
             epochs=config.epochs, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
             resumed_from_epoch=start_epoch - 1, pid=os.getpid(), batch_size=config.batch_size,
             micro_batch=config.micro_batch_size, accumulation=config.accumulation,
             rehearsal=run.rehearse)
    with inference.autocast():
        experiment.prepare(log, rehearse=run.rehearse)

    meter = RehearsalMeter(device) if run.rehearse else StepMeter()
    loop = _EpochLoop(config=config, seed=run.seed, total_steps=total_steps, device=device,
                      precision=precision, log=log, step=(start_epoch - 1) * steps_per_epoch,
                      meter=meter)
    # Without a validator the held-out evaluator scores the epochs too, and the last epoch's
    # row is reused as the final model row rather than predicted again. So does a rehearsal:
    # its numbers mean nothing, and the final model pass would only repeat the epoch pass it
    # measures (the plan counts it once more for the run's final evaluation).
    reuse_last_row = validator is None or run.rehearse
    epochs_scorer = evaluator if reuse_last_row else validator
    model_row: dict[str, Any] | None = None
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        if isinstance(meter, RehearsalMeter):
            epoch_losses, epoch_logs = loop.rehearse_epoch(experiment, optimizer, epoch)
            meter.end_steps()
        else:
            epoch_losses, epoch_logs = loop.train_epoch(experiment, optimizer, epoch)
        train_seconds += time.perf_counter() - epoch_start
        model_row, extra = None, {}
        if config.evaluates_after(epoch):
            with inference.autocast(), meter.measure_evaluation("epoch"):
                model_row, extra = _evaluate_epoch(experiment, epochs_scorer, log, epoch=epoch)
        _record_epoch(history, epoch=epoch, losses=epoch_losses, logs=epoch_logs,
                      model_row=model_row, extra=extra, started=epoch_start)
        _save_epoch_checkpoint(checkpoint_path, experiment, optimizer, log, epoch=epoch,
                               history=history, train_seconds=train_seconds)

    with inference.autocast(), meter.measure_evaluation("final"):
        final = evaluator.evaluate_all(experiment,
                                       model_row=model_row if reuse_last_row else None)
        strip_path = evaluator.save_strip(experiment, run.output_dir / "frames.png")
    results = _results_record(
        experiment, config=config, run=run, run_config=run_config, device=device,
        threads=threads, history=history, final=final, strip_path=strip_path,
        inference=inference, train_seconds=train_seconds, wall_start=wall_start,
    )
    results["provenance"] = {
        "code": provenance.git_state(Path.cwd()),  # a job runs in its variant's worktree
        "checkpoints": checkpoints,
        "attention": attention.kernels_used(),
        "amp_dtype": precision.name, "eval_dtype": inference.name,
        **provenance.library_versions(),
    }
    log.write_results(results)
    if isinstance(meter, RehearsalMeter):
        meter.end_evaluation()
        write_rehearsal(run.output_dir / REHEARSAL_FILE, experiment, meter, config=config,
                        device=device, precision=precision, inference=inference)
    log.end(wall_s=results["timings"]["wall_s"])
    return results


def _place(experiment: Experiment, device: torch.device) -> None:
    """Everything on ``device``; the frozen modules in eval mode and without gradients."""
    experiment.to(device)
    for module in experiment.frozen_modules():
        module.eval()
        module.requires_grad_(False)


@dataclass
class _Optimizer:
    """What one optimizer step needs beside the loss: AdamW, its learning-rate schedule, the
    AMP gradient scaler, and the parameters the gradient clip covers."""

    optimizer: torch.optim.AdamW
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    parameters: list[torch.Tensor]
    grad_clip: float | None

    @classmethod
    def for_experiment(cls, experiment: Experiment, config: TrainConfig,
                       precision: runtime.Precision, *, total_steps: int) -> _Optimizer:
        groups = experiment.param_groups()
        for group in groups:
            group["lr"] = config.lr * group.pop("lr_scale", 1.0)
        parameters = [p for group in groups for p in group["params"]]
        optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                                      betas=(0.9, 0.95))
        scaler = torch.amp.GradScaler("cuda", enabled=precision.needs_grad_scaler)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(step, total_steps=total_steps,
                                   warmup_steps=config.warmup_steps,
                                   min_ratio=config.min_lr_ratio),
        )
        optimizer.zero_grad(set_to_none=True)  # the first step adds to no stale gradient
        return cls(optimizer, schedule, scaler, parameters, config.grad_clip)

    def allocate_state(self) -> None:
        """Create AdamW's per-parameter state now, as its first step would: the same updates
        follow, and memory holds it from the first backward on."""
        self.allocate_moments(self.optimizer)

    @staticmethod
    def allocate_moments(optimizer: torch.optim.AdamW) -> None:
        """Zero moments and step 0 for every parameter that has no state yet (what AdamW's
        first step creates)."""
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad and not optimizer.state[p]:
                    optimizer.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }

    @property
    def lr(self) -> float:
        """The rate of the first group (the variant's main one) at this step."""
        return self.optimizer.param_groups[0]["lr"]

    def backward(self, loss: torch.Tensor) -> None:
        """Add the gradients of ``loss`` to those of the step's earlier micro-batches."""
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        """One update from the gradients added up since the last, then drop them (freed
        before evaluation rather than held until the next step)."""
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])


def _resume(
    checkpoint_path: Path, experiment: Experiment, optimizer: _Optimizer, *, resume: bool
) -> tuple[int, list[dict[str, Any]], float]:
    """(first epoch to train, history so far, training seconds so far): from the last
    checkpoint with ``resume``, else a fresh start."""
    if resume and checkpoint_path.exists():
        state = read_checkpoint(checkpoint_path)  # weights-only; a refusal is one line
        experiment.trainable.load_state_dict(state["trainable"])
        optimizer.load_state_dict(state)
        _set_rng_state(state["rng"])
        return state["epoch"] + 1, state["history"], state["train_seconds"]
    if resume:
        print(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch", flush=True)
    return 1, [], 0.0


@dataclass
class _EpochLoop:
    """Runs the training epochs: the step count carries over from one epoch to the next."""

    config: TrainConfig
    seed: int
    total_steps: int
    device: torch.device
    precision: runtime.Precision
    log: Run
    step: int  # optimizer steps done so far, over all epochs
    meter: StepMeter = field(default_factory=StepMeter)
    thread_budget: runtime.ThreadBudget = field(default_factory=runtime.ThreadBudget)
    micro_steps: int = 0  # forward and backward passes made by this process

    def train_epoch(self, experiment: Experiment, optimizer: _Optimizer, epoch: int
                    ) -> tuple[list[float], list[dict[str, float]]]:
        """One pass over the training clips in this epoch's order; the loss and the logs of
        every step."""
        config = self.config
        experiment.trainable.train()
        order = epoch_order(self.seed, epoch, config.train_clips)
        progress, losses, logs = _Progress(), [], []
        batches = experiment.train_batches(order, config.batch_size)
        for clips, batch in zip(_batch_clips(len(order), config.batch_size), batches, strict=True):
            loss, step_logs = self._train_step(experiment, optimizer, batch, clips,
                                               config.micro_batch_size)
            progress = self._after_step(progress, clips, loss, epoch=epoch, lr=optimizer.lr)
            losses.append(loss)
            logs.append(step_logs)
        return losses, logs

    def rehearse_epoch(self, experiment: Experiment, optimizer: _Optimizer, epoch: int
                       ) -> tuple[list[float], list[dict[str, float]]]:
        """A rehearsal's epoch: one optimizer step at each measured micro-batch size, each a
        single micro-batch measured by the meter, on the first clips of the epoch's order
        (a frozen tokenizer's latent cache then encodes only the largest step's clips). The
        batch is built before the step, so its data loading is not in the step."""
        experiment.trainable.train()
        sizes = self.config.rehearsal_micro_batches
        order = epoch_order(self.seed, epoch, max(sizes))
        progress, losses, logs = _Progress(), [], []
        for size in sizes:
            batch = next(iter(experiment.train_batches(order[:size], size)))
            with self.meter.measure(size):
                loss, step_logs = self._train_step(experiment, optimizer, batch, size, size)
            progress = self._after_step(progress, size, loss, epoch=epoch, lr=optimizer.lr)
            losses.append(loss)
            logs.append(step_logs)
        return losses, logs

    def _after_step(self, progress: _Progress, clips: int, loss: float, *, epoch: int,
                    lr: float) -> _Progress:
        """Count the step, take the threads freed by ended jobs, report every ``log_every``
        steps; the progress since the last report."""
        self.step += 1
        if (granted := self.thread_budget.poll()) is not None:
            print(f"threads: now {granted} (cores freed by ended jobs)", flush=True)
        progress.losses.append(loss)
        progress.samples += clips
        if self.step % self.config.log_every == 0 or self.step == self.total_steps:
            self._report_progress(progress, epoch=epoch, lr=lr)
            return _Progress()
        return progress

    def _train_step(self, experiment: Experiment, optimizer: _Optimizer,
                    batch: dict[str, Any], clips: int, micro_batch: int
                    ) -> tuple[float, dict[str, float]]:
        """One optimizer step on a batch of ``clips`` clips, a forward and backward per
        micro-batch of ``micro_batch`` clips; the batch's loss and logs (clip-weighted means
        over its micro-batches)."""
        loss, weighted_logs = 0.0, []
        for micro_clips, batch_piece in split_batch(batch, clips, micro_batch):
            weight = micro_clips / clips  # its share of a loss that is a mean over the clips
            micro_loss, micro_logs = self._forward_backward(experiment, optimizer, batch_piece,
                                                            weight, micro_batch)
            loss += weight * micro_loss
            weighted_logs.append((weight, micro_logs))
        optimizer.step()
        return loss, _weighted_mean_logs(weighted_logs)

    def _forward_backward(self, experiment: Experiment, optimizer: _Optimizer,
                          batch_piece: dict[str, Any], weight: float, micro_batch: int
                          ) -> tuple[float, dict[str, float]]:
        """The loss of one micro-batch, its gradients (times ``weight``) added to the step's."""
        if self.micro_steps == 0:
            runtime.inject_oom(micro_batch)  # a test's fault, if asked for
        with self.precision.autocast():
            loss, logs = experiment.loss(batch_piece)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step + 1}: "
                                     "lower the learning rate or check the data")
        optimizer.backward(loss * weight)
        self.micro_steps += 1
        return loss.item(), logs

    def _report_progress(self, progress: _Progress, *, epoch: int, lr: float) -> None:
        elapsed = time.perf_counter() - progress.started
        seconds_per_step = elapsed / max(1, len(progress.losses))
        record = self.log.emit(
            "progress", epoch=epoch, step=self.step, total_steps=self.total_steps,
            loss=sum(progress.losses) / len(progress.losses),
            samples_per_s=progress.samples / max(elapsed, 1e-9),
            eta_s=seconds_per_step * (self.total_steps - self.step),
            lr=lr, memory_mb=runtime.peak_memory_mb(self.device),
        )
        print(f"epoch {epoch} step {self.step}/{self.total_steps} loss {record['loss']:.4f} "
              f"{record['samples_per_s']:.1f} samples/s eta {record['eta_s']:.0f}s", flush=True)


def _evaluate_epoch(experiment: Experiment, evaluator: Evaluator, log: Run, *,
                    epoch: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Score the model on the held-out clips and log it; the model's row and the variant's
    own held-out figures."""
    model_row = evaluator.evaluate_model(experiment)
    metrics = _scalars(model_row)
    extra = experiment.epoch_metrics()
    log.emit("eval", epoch=epoch, metrics=metrics, **({"extra": extra} if extra else {}))
    return model_row, extra


def _scalars(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row without its per-frame and per-clip lists."""
    return {key: value for key, value in row.items() if key not in ("per_frame", "per_clip")}


def _record_epoch(history: list[dict[str, Any]], *, epoch: int, losses: list[float],
                  logs: list[dict[str, float]], model_row: dict[str, Any] | None,
                  extra: dict[str, float], started: float) -> None:
    """Add the epoch to ``history``: its training figures, and its evaluation's (None on an
    epoch not evaluated, see ``TrainConfig.eval_every``)."""
    history.append({
        "epoch": epoch,
        "train_loss": sum(losses) / max(1, len(losses)),
        "train_logs": _mean_logs(logs),
        "eval": _scalars(model_row) if model_row is not None else None,
        "extra": extra,
        "seconds": time.perf_counter() - started,
    })
    scored = (f", eval PSNR {model_row['psnr']:.2f} dB, SSIM {model_row['ssim']:.4f}"
              if model_row is not None else "")
    print(f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}{scored}", flush=True)


def _save_epoch_checkpoint(
    path: Path,
    experiment: Experiment,
    optimizer: _Optimizer,
    log: Run,
    *,
    epoch: int,
    history: list[dict[str, Any]],
    train_seconds: float,
) -> None:
    """Everything ``--resume`` needs to go on as if the run had not stopped."""
    save_checkpoint(path, {
        "epoch": epoch,
        "trainable": experiment.trainable.state_dict(),
        **optimizer.state_dict(),
        "rng": _rng_state(),
        "history": history,
        "train_seconds": train_seconds,
    })
    log.emit("checkpoint", epoch=epoch, path=LAST_CHECKPOINT)


def _results_record(
    experiment: Experiment,
    *,
    config: TrainConfig,
    run: RunSpec,
    run_config: dict[str, Any],
    device: torch.device,
    threads: int,
    history: list[dict[str, Any]],
    final: dict[str, dict[str, Any]],
    strip_path: Path,
    inference: runtime.Precision,
    train_seconds: float,
    wall_start: float,
) -> dict[str, Any]:
    """The ``results.json`` record (schema 2): the model's row beside the reference rows,
    each one's PSNR and SSIM per future frame as series, the frame strip as a picture."""
    samples_seen = config.epochs * config.train_clips
    results = {
        "schema": RESULTS_SCHEMA,
        "variant": run.variant,
        "preset": run.preset,
        "seed": run.seed,
        "status": "success",
        "config": run_config | {"rehearsal": run.rehearse, "train": asdict(config) | {
            "micro_batch": config.micro_batch_size, "accumulation": config.accumulation},
            "eval_dtype": inference.name},
        "environment": runtime.environment(device, threads),
        "parameters": experiment.parameter_counts(),
        "history": history,
        "metrics": {row: _scalars(values) for row, values in final.items()},
        # Each held-out clip's metrics, in one order for every variant: paired comparisons.
        "per_example": {row: values["per_clip"] for row, values in final.items()},
        "series": {f"{metric}_per_frame": {
            "index": "future frame", "metric": metric,
            "rows": {row: values["per_frame"][metric] for row, values in final.items()}}
            for metric in PER_FRAME_SERIES},
        "images": {"frames": {"path": strip_path.name, "caption": FRAME_STRIP_CAPTION}},
        "timings": {
            "wall_s": time.perf_counter() - wall_start,
            "train_s": train_seconds,
            "samples_per_s": samples_seen / max(train_seconds, 1e-9),
            # Reserved on CUDA, not allocated: what other processes on the GPU cannot have.
            "peak_memory_mb": runtime.peak_memory(device)["peak_memory_mb"],
        },
        "artifacts": {"checkpoint": LAST_CHECKPOINT},
    }
    return results


def split_batch(batch: dict[str, Any], clips: int, micro_batch: int
                ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(clips, micro-batch) pieces of a batch of ``clips`` clips, ``micro_batch`` clips each
    (the last may hold fewer): every tensor whose first dim is ``clips`` is cut along it (the
    clips and anything per clip, e.g. a (B,) weight), anything else goes whole into each."""
    if micro_batch >= clips:
        yield clips, batch
        return
    per_clip = {key for key, value in batch.items()
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == clips}
    assert per_clip, f"no tensor of the batch has its {clips} clips as first dim"
    for start in range(0, clips, micro_batch):
        stop = min(clips, start + micro_batch)
        yield stop - start, {key: value[start:stop] if key in per_clip else value
                             for key, value in batch.items()}


def _batch_clips(num_clips: int, batch_size: int) -> Iterator[int]:
    """Clips in each of ``Experiment.train_batches``'s batches: full ones, then the rest."""
    for start in range(0, num_clips, batch_size):
        yield min(batch_size, num_clips - start)


def _weighted_mean_logs(weighted: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Per key, the weighted mean over the micro-batches that logged it."""
    keys = {key for _, logs in weighted for key in logs}
    return {key: sum(w * logs[key] for w, logs in weighted if key in logs)
            / sum(w for w, logs in weighted if key in logs) for key in sorted(keys)}


def _mean_logs(logs: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for entry in logs for key in entry}
    return {key: sum(e[key] for e in logs if key in e) / sum(key in e for e in logs)
            for key in sorted(keys)}
