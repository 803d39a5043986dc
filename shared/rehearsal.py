"""What a rehearsal measures of its training step, and ``rehearsal.json`` (requirements.md,
section 3): the peak memory, the FLOPs of a micro-step and its time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from orchestrator.formats import write_json_atomic
from shared import runtime
from shared.experiment import Experiment

if TYPE_CHECKING:
    from shared.training import TrainConfig

REHEARSAL_FILE = "rehearsal.json"
# Held-out clips in a rehearsal: at full one clip's evaluation (its prediction decoded per
# draw, the oracle's round trip) costs minutes on a CPU.
REHEARSAL_EVAL_CLIPS = 1


class StepMeter:
    """What the loop measures of its steps: nothing, outside a rehearsal."""

    def step(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def keep(self, micro_batch: dict[str, Any]) -> None:
        """Offered every micro-batch the loop trains on."""


class RehearsalMeter(StepMeter):
    """A rehearsal's figures: the wall time of its micro-step with its optimizer step, and
    the FLOPs of that micro-step's forward and backward, counted in a pass of their own
    after everything else (the counter keeps what activation checkpointing frees, so it
    would inflate the peak memory measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.flops: int | None = None
        self.step_seconds: float | None = None
        self.micro_batch: dict[str, Any] | None = None
        self._steps = 0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        self._synchronize()
        started = time.perf_counter()
        yield
        self._synchronize()  # CUDA kernels run asynchronously: wait for this step's
        self._steps += 1
        if self._steps == 1:
            self.step_seconds = time.perf_counter() - started

    def keep(self, micro_batch: dict[str, Any]) -> None:
        if self.micro_batch is None:
            self.micro_batch = micro_batch

    def count_flops(self, experiment: Experiment, precision: runtime.Precision) -> None:
        """The FLOPs of a forward and backward of the kept micro-batch, one clip at a time
        (what the counter holds on to then stays one clip's); the gradients are dropped and no
        weight changes."""
        if self.micro_batch is None:
            return
        experiment.trainable.train()
        with FlopCounterMode(display=False) as counter:
            for clip in _one_clip_pieces(self.micro_batch):
                with precision.autocast():
                    loss, _ = experiment.loss(clip)
                loss.backward()
                experiment.trainable.zero_grad(set_to_none=True)
        self.flops = int(counter.get_total_flops())

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def write_rehearsal(
    path: Path,
    experiment: Experiment,
    meter: RehearsalMeter,
    *,
    config: TrainConfig,
    device: torch.device,
    precision: runtime.Precision,
    memory: dict[str, Any],
) -> None:
    """What a plan needs of this job (requirements.md, section 3): its peak memory over the
    whole run so far (latent cache, steps, evaluation), the cost of a micro-step and the
    accumulation the real run would do."""
    write_json_atomic(path, {
        "micro_batch": config.micro_batch_size,
        "batch_size": config.batch_size,
        "accumulation": config.accumulation,
        "device": str(device),
        "precision": precision.name,
        **memory,
        "flops_per_micro_batch": meter.flops,
        "step_seconds": meter.step_seconds,
        "parameters": experiment.parameter_counts(),
    })


def _one_clip_pieces(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The batch clip by clip: whatever has the clips as first dim is cut, the rest shared."""
    clips = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim())
    per_clip = {key for key, value in batch.items()
                if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == clips}
    for i in range(clips):
        yield {key: value[i:i + 1] if key in per_clip else value for key, value in batch.items()}
