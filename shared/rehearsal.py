"""What a rehearsal measures, and ``rehearsal.json`` (requirements.md, section 3): per measured
micro-batch size the peak memory of its step alone, its FLOPs and its time; the peaks of the
phases whose memory does not grow with the micro-batch (setup, evaluation)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from orchestrator.formats import write_json_atomic
from shared import runtime
from shared.experiment import Experiment

if TYPE_CHECKING:
    from shared.training import TrainConfig

REHEARSAL_FILE = "rehearsal.json"
# Held-out clips in a rehearsal: at full one clip's evaluation (its prediction decoded per
# draw, the oracle's round trip) costs minutes on a CPU.
REHEARSAL_EVAL_CLIPS = 1
# Micro-batch sizes a rehearsal measures: two points give the fixed memory and the memory
# per clip; the smallest two keep the CPU time of a full-shape rehearsal down.
REHEARSAL_POINTS = 2



class FlopCount(TorchDispatchMode):
    """FLOPs of every operation ``torch.utils.flop_counter`` has a formula for (matmuls,
    convolutions, attention), as they run, recomputation included.

    Not ``FlopCounterMode``: its module tracking holds on to tensors that activation
    checkpointing would free (measured: +1.5 GB on a 9x64x64 clip step of the official
    tokenizer), so a step counted with it would not show its real peak. This holds none."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


@dataclass(frozen=True)
class StepPoint:
    """One measured optimizer step of ``micro_batch`` clips."""

    micro_batch: int
    peak_memory_mb: float
    peak_allocated_mb: float | None
    step_seconds: float
    flops: int


@dataclass(frozen=True)
class EvaluationCost:
    """One measured evaluation pass: its FLOPs and time (every clip of it)."""

    seconds: float
    flops: int


class StepMeter:
    """What the loop measures of its steps and evaluations: nothing, outside a rehearsal."""

    def measure(self, micro_batch: int) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def measure_evaluation(self, name: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


class RehearsalMeter(StepMeter):
    """A rehearsal's figures. The peak memory is reset before each measured step and read
    after it; the setup phase is what the process peaked at before the first step, the
    evaluation phase what it peaks at after the last (``end_steps`` resets for it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.points: list[StepPoint] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.evaluations: dict[str, EvaluationCost] = {}
        self.memory_source = runtime.peak_memory(device)["memory_source"]

    @contextlib.contextmanager
    def measure(self, micro_batch: int) -> Iterator[None]:
        if not self.points:
            self.phases["setup"] = self._peak()
        runtime.reset_peak_memory(self.device)
        counter = FlopCount()
        started = time.perf_counter()
        with counter:
            yield
        self._synchronize()  # CUDA kernels run asynchronously: wait for this step's
        seconds = time.perf_counter() - started
        peak = self._peak()
        self.points.append(StepPoint(micro_batch, peak["peak_memory_mb"],
                                     peak["peak_allocated_mb"], seconds, counter.total))

    @contextlib.contextmanager
    def measure_evaluation(self, name: str) -> Iterator[None]:
        """The FLOPs and time of an evaluation pass: "epoch" (the model's row and the
        variant's own figures, each evaluated epoch) or "final" (the reference rows, the
        oracle's round trip and the strip, once). Its memory is the evaluation phase's."""
        counter = FlopCount()
        started = time.perf_counter()
        with counter:
            yield
        self._synchronize()
        self.evaluations[name] = EvaluationCost(time.perf_counter() - started, counter.total)

    def end_steps(self) -> None:
        """From here on the evaluation phase: held-out clips, checkpoint, strip, results."""
        runtime.reset_peak_memory(self.device)

    def end_evaluation(self) -> None:
        self.phases["evaluation"] = self._peak()

    def _peak(self) -> dict[str, Any]:
        memory = runtime.peak_memory(self.device)
        return {"peak_memory_mb": memory["peak_memory_mb"],
                "peak_allocated_mb": memory["peak_allocated_mb"]}

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
    inference: runtime.Precision,
) -> None:
    """What a plan needs of this job (requirements.md, section 3): each measured step's
    peak, FLOPs and time, the other phases' peaks, the evaluation's cost per held-out clip,
    and the accumulation the real run would do at its micro-batch."""
    peaks = [p.peak_memory_mb for p in meter.points]
    peaks += [phase["peak_memory_mb"] for phase in meter.phases.values()]
    write_json_atomic(path, {
        "batch_size": config.batch_size,
        "micro_batch": config.micro_batch_size,
        "accumulation": config.accumulation,
        "device": str(device),
        "precision": precision.name,
        "memory_source": meter.memory_source,
        "points": [asdict(point) for point in meter.points],
        "phases": meter.phases,
        "peak_memory_mb": max(peaks),
        "parameters": experiment.parameter_counts(),
        "run": {"epochs": config.run_epochs, "steps_per_epoch": config.run_steps_per_epoch,
                "eval_clips": config.run_eval_clips, "evaluations": config.run_evaluations},
        "evaluation": {
            "precision": inference.name,
            "every_epochs": config.eval_every,
            "clips": config.eval_clips,
            **{name: asdict(cost) for name, cost in meter.evaluations.items()},
        },
    })
