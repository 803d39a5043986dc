"""The plan: each job's micro-batch, memory and GPU, from what a rehearsal measured.

A rehearsal runs every training job once at its preset's true shapes; the job takes one
optimizer step at each of the two smallest micro-batch sizes and reports the peak memory of
each step, and of the phases around them (``rehearsal.json``, requirements.md section 3).
A step's memory grows linearly with the clips of its micro-batch, so the two points give a
fixed part and a part per clip, ``fixed + per_clip * m``; setup and evaluation do not grow
with it, so a job's memory at micro-batch m is ``max(fixed + per_clip * m, their peaks)``.
For a GPU inventory the plan then picks, per job, the largest micro-batch that divides the
batch and fits the largest GPU with a margin for the CUDA context, and packs the jobs on the
GPUs the way the launcher will (the placement rule of ``devices.Pool``). A job that fits no
GPU even at one clip is named with what it needs.

``plan.json`` goes into the rehearsal's run folder and, as the latest plan of that preset
on that kind of device, into ``<state>/plans/``; `orch train`/`run` plan from it, falling
back to the config's resources when nothing was measured. A real run measures too: the peak
memory its results.json reports at its micro-batch is folded into that latest plan.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from orchestrator.devices import Gpu, NeverFits, Pool, Request
from orchestrator.formats import (
    CorruptFile,
    JobState,
    Stage,
    load_results,
    warn_corrupt,
    write_json_atomic,
)
from orchestrator.formats.files import Record, error_text

CUDA_CONTEXT_MB = 1024  # what a process's CUDA context takes before its first tensor
FRAGMENTATION = 0.05  # the allocator's slack over the peak it reserved, as a fraction
REHEARSAL_FILE = "rehearsal.json"
PLAN_FILE = "plan.json"
REHEARSAL_SOURCE = "rehearsal"  # what measured a plan's point, unless a run did
# The throughput an epoch's time is estimated at: bf16 training sustains roughly a third of
# an A100's 312 TFLOP/s dense peak, a tenth of an H100's; the plan prints the figure it used.
SUSTAINED_TFLOPS = 100.0


# ---------------------------------------------------------------------------- rehearsal.json


class Point(Record):
    """One measured step of a rehearsal: an optimizer step at ``micro_batch`` clips."""

    micro_batch: int
    peak_memory_mb: float
    peak_allocated_mb: float | None = None  # on CUDA, what tensors held; None on the CPU
    step_seconds: float | None = None
    flops: float | None = None


class PhasePeak(Record):
    """The peak of a part of the rehearsal whose memory does not grow with the micro-batch."""

    peak_memory_mb: float
    peak_allocated_mb: float | None = None


class RunShape(Record):
    """The run a rehearsal stands for: its epochs, optimizer steps per epoch, held-out clips
    and evaluations."""

    epochs: int | None = None
    steps_per_epoch: int | None = None
    eval_clips: int | None = None
    evaluations: int | None = None


class EvaluationPass(Record):
    """One measured evaluation pass over the rehearsal's held-out clips."""

    seconds: float
    flops: float


class EvaluationCost(Record):
    """What the rehearsal's evaluation cost, and how the run evaluates."""

    precision: str
    every_epochs: int
    clips: int  # the rehearsal's held-out clips, that the passes below scored
    epoch: EvaluationPass | None = None  # the model's row, after each evaluated epoch
    final: EvaluationPass | None = None  # reference rows and oracle, once at the end


class Measurement(Record):
    """One rehearsal.json: a job's measured steps and the phases around them."""

    batch_size: int
    device: str  # cpu or cuda:N
    precision: str  # what the measured steps computed in: fp32, bf16 or fp16
    memory_source: str  # cuda_max_memory_reserved or process_peak_rss
    points: tuple[Point, ...]  # one per measured micro-batch size, ascending
    phases: dict[str, PhasePeak]  # setup, evaluation
    run: RunShape = RunShape()  # absent in rehearsal.json files of before it was recorded
    evaluation: EvaluationCost | None = None  # likewise

    @model_validator(mode="after")
    def _usable_points(self) -> Measurement:
        sizes = [p.micro_batch for p in self.points]
        if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
            raise ValueError("'points' needs distinct micro_batch values of at least 1")
        return self

    @property
    def device_kind(self) -> str:
        return device_kind(self.device)

    @property
    def other_phases_mb(self) -> float:
        """The floor under every micro-batch: the largest peak outside the measured steps."""
        return max((p.peak_memory_mb for p in self.phases.values()), default=0.0)

    @property
    def flops_per_step(self) -> float | None:
        """FLOPs of one optimizer step of the whole batch: a step's FLOPs grow with its clips."""
        first = min(self.points, key=lambda p: p.micro_batch)
        return first.flops / first.micro_batch * self.batch_size if first.flops else None

    @property
    def evaluation_flops(self) -> float | None:
        """FLOPs of the run's evaluations, per clip as the rehearsal measured them, times the
        run's clips: each evaluated epoch's pass (validation clips), and at the end the model's
        pass again and the final rows' (held-out clips; a rehearsal reuses its epoch pass for
        the former and measures only the latter as ``final``)."""
        cost, run = self.evaluation, self.run
        if cost is None or cost.epoch is None or not run.eval_clips or not run.evaluations:
            return None
        per_clip = ((run.evaluations + 1) * cost.epoch.flops
                    + (cost.final.flops if cost.final else 0.0)) / cost.clips
        return per_clip * run.eval_clips

    @classmethod
    def read(cls, path: Path) -> Measurement:
        """Read and validate one rehearsal.json; raises ``CorruptFile`` naming the field."""
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CorruptFile(path, f"cannot read ({error.strerror or error})") from None
        try:
            return cls.model_validate_json(data)
        except ValidationError as error:
            raise CorruptFile(path, error_text(error)) from None


def device_kind(device: str) -> str:
    """The kind of device a latest plan is kept per: "cuda" for cuda or cuda:N, else "cpu"."""
    return "cuda" if device.startswith("cuda") else "cpu"


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class MemoryModel:
    """memory(m) = max(fixed_mb + per_clip_mb * m, floor_mb), from two measured steps; where a
    micro-batch was measured, its measured peak replaces the line."""

    fixed_mb: float
    per_clip_mb: float
    floor_mb: float  # setup and evaluation: what no micro-batch goes under
    measured: dict[int, float]  # micro-batch -> measured peak, MB

    @classmethod
    def fit(cls, measurement: Measurement) -> MemoryModel:
        by_size = {p.micro_batch: p.peak_memory_mb for p in measurement.points}
        floor = measurement.other_phases_mb
        if len(by_size) < 2:  # a batch of one: all memory counts as per clip
            (size, peak), = by_size.items()
            return cls(fixed_mb=0.0, per_clip_mb=peak / size, floor_mb=floor, measured=by_size)
        (m1, p1), (m2, p2) = sorted(by_size.items())[:2]
        per_clip = max(0.0, (p2 - p1) / (m2 - m1))
        return cls(fixed_mb=p1 - per_clip * m1, per_clip_mb=per_clip, floor_mb=floor,
                   measured=by_size)

    def step_at(self, micro_batch: int) -> float:
        """The training step's memory alone at ``micro_batch`` clips (measured, or the line)."""
        return self.measured.get(micro_batch, self.fixed_mb + self.per_clip_mb * micro_batch)

    def at(self, micro_batch: int) -> tuple[float, str]:
        """(memory MB, "measured" or "extrapolated") at ``micro_batch`` clips."""
        basis = "measured" if micro_batch in self.measured else "extrapolated"
        return max(self.step_at(micro_batch), self.floor_mb), basis


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class MeasuredPeak:
    """A peak a job's plan rests on, and what measured it."""

    micro_batch: int
    peak_memory_mb: float
    source: str = REHEARSAL_SOURCE  # or "run <run_id>": a real run's peak at its micro-batch


@dataclass(frozen=True)
class JobPlan:
    variant: str
    batch_size: int
    micro_batch: int
    accumulation: int
    memory_mb: float  # the job's peak at its micro-batch (without the margin)
    memory_basis: str  # measured, extrapolated, or config (nothing measured)
    margin_mb: float  # CUDA context and allocator slack, on top of memory_mb
    fixed_mb: float | None
    per_clip_mb: float | None
    gpus: list[int] = field(default_factory=list)  # where it goes; [] = CPU or nowhere
    fits: bool = True
    note: str = ""  # why it fits nowhere, or how it was chosen
    flops_per_step: float | None = None
    precision: str = ""  # what the rehearsal's steps computed in
    other_phases_mb: float = 0.0  # the floor: setup's and evaluation's peak
    measured: list[MeasuredPeak] = field(default_factory=list)
    steps_per_epoch: int | None = None  # of the real run, as the rehearsal recorded it
    epochs: int | None = None
    evaluation_flops: float | None = None  # all the real run's evaluations together
    evaluation_precision: str = ""  # what they compute in

    @property
    def planned_mb(self) -> float:
        return self.memory_mb + self.margin_mb

    def epoch_hours(self, tflops: float = SUSTAINED_TFLOPS) -> float | None:
        """Hours of one epoch's training steps at ``tflops`` sustained (evaluation not
        included), from the rehearsal's FLOPs per step."""
        if not self.flops_per_step or not self.steps_per_epoch:
            return None
        return self.flops_per_step * self.steps_per_epoch / (tflops * 1e12) / 3600

    def evaluation_hours(self, tflops: float = SUSTAINED_TFLOPS) -> float | None:
        """Hours of all the run's evaluations at ``tflops`` sustained."""
        if not self.evaluation_flops:
            return None
        return self.evaluation_flops / (tflops * 1e12) / 3600

    def run_hours(self, tflops: float = SUSTAINED_TFLOPS) -> float | None:
        """Hours of the whole run, its epochs' steps and its evaluations, at ``tflops``."""
        epoch = self.epoch_hours(tflops)
        if epoch is None or not self.epochs:
            return None
        return epoch * self.epochs + (self.evaluation_hours(tflops) or 0.0)

    @property
    def floor_dominates(self) -> bool:
        """Whether setup or evaluation, not the training step, sets the job's peak."""
        return self.other_phases_mb > self.memory_model().step_at(self.micro_batch)

    def memory_model(self) -> MemoryModel:
        return MemoryModel(fixed_mb=self.fixed_mb or 0.0, per_clip_mb=self.per_clip_mb or 0.0,
                           floor_mb=self.other_phases_mb,
                           measured={p.micro_batch: p.peak_memory_mb for p in self.measured})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobPlan:
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["measured"] = [MeasuredPeak(**p) for p in raw.get("measured", [])]
        return cls(**known)


@dataclass
class Plan:
    preset: str
    measured_on: str  # "cpu" or "cuda": where the rehearsal ran
    memory_source: str
    inventory: list[Gpu]
    jobs: list[JobPlan]

    def job(self, variant: str) -> JobPlan | None:
        return next((j for j in self.jobs if j.variant == variant), None)

    @property
    def precision(self) -> str:
        """The precision(s) the jobs were measured in, e.g. "bf16" or "bf16/fp32"."""
        return "/".join(sorted({j.precision for j in self.jobs if j.precision})) or "unknown"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for raw, job in zip(data["jobs"], self.jobs, strict=True):
            raw["planned_mb"] = job.planned_mb
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        return cls(preset=raw["preset"], measured_on=raw["measured_on"],
                   memory_source=raw["memory_source"],
                   inventory=[Gpu(**g) for g in raw["inventory"]],
                   jobs=[JobPlan.from_dict(j) for j in raw["jobs"]])


def margin_for(memory_mb: float) -> float:
    return CUDA_CONTEXT_MB + FRAGMENTATION * memory_mb


def choose_micro_batch(model: MemoryModel, batch_size: int, capacity_mb: float | None,
                       ) -> tuple[int, bool]:
    """The largest micro-batch dividing ``batch_size`` whose memory and margin fit in
    ``capacity_mb`` (None: no GPU, the whole batch), and whether even one clip fits."""
    divisors = [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    if capacity_mb is None:
        return batch_size, True
    for m in divisors:
        memory, _ = model.at(m)
        if memory + margin_for(memory) <= capacity_mb:
            return m, True
    return 1, False


def plan_job(variant: str, model: MemoryModel, batch_size: int, capacity_mb: float | None, *,
             precision: str, flops_per_step: float | None,
             steps_per_epoch: int | None = None, epochs: int | None = None,
             evaluation_flops: float | None = None, evaluation_precision: str = "",
             sources: dict[int, str] | None = None) -> JobPlan:
    """One job's micro-batch and memory for a largest GPU of ``capacity_mb`` (None: no GPU).
    ``sources`` names what measured a point when it was not the rehearsal (a run)."""
    sources = sources or {}
    micro, fits = choose_micro_batch(model, batch_size, capacity_mb)
    memory, basis = model.at(micro)
    notes = [] if fits or capacity_mb is None else [
        f"needs {(memory + margin_for(memory)) / 1024:.1f} GB at one clip a micro-batch; "
        f"the largest GPU has {capacity_mb / 1024:.1f} GB"]
    notes += [f"{model.measured[m] / 1024:.1f} GB at micro-batch {m} measured by {source}"
              for m, source in sorted(sources.items())]
    return JobPlan(
        variant=variant, batch_size=batch_size, micro_batch=micro,
        accumulation=batch_size // micro, memory_mb=memory, memory_basis=basis,
        margin_mb=margin_for(memory) if capacity_mb is not None else 0.0,
        fixed_mb=model.fixed_mb, per_clip_mb=model.per_clip_mb, fits=fits,
        note="; ".join(notes), flops_per_step=flops_per_step, precision=precision,
        other_phases_mb=model.floor_mb, steps_per_epoch=steps_per_epoch, epochs=epochs,
        evaluation_flops=evaluation_flops, evaluation_precision=evaluation_precision,
        measured=[MeasuredPeak(m, peak, sources.get(m, REHEARSAL_SOURCE))
                  for m, peak in sorted(model.measured.items())])


def largest_gpu_mb(inventory: list[Gpu]) -> float | None:
    return max((g.total_mb for g in inventory), default=None)


def build_plan(preset: str, measurements: dict[str, Measurement],
               inventory: list[Gpu]) -> Plan:
    """Per variant (its rehearsal.json): micro-batch, memory at it and its GPU(s) on
    ``inventory``."""
    capacity = largest_gpu_mb(inventory)
    jobs = [plan_job(variant, MemoryModel.fit(m), m.batch_size, capacity,
                     precision=m.precision, flops_per_step=m.flops_per_step,
                     steps_per_epoch=m.run.steps_per_epoch, epochs=m.run.epochs,
                     evaluation_flops=m.evaluation_flops,
                     evaluation_precision=m.evaluation.precision if m.evaluation else "")
            for variant, m in measurements.items()]
    sample = next(iter(measurements.values()))
    plan = Plan(preset=preset, measured_on=sample.device_kind,
                memory_source=sample.memory_source, inventory=list(inventory), jobs=jobs)
    place(plan)
    return plan


def place(plan: Plan) -> None:
    """Put the jobs that fit on the inventory's GPUs, largest first, as the launcher packs
    them (an idle GPU first, else the fullest one that still holds the job)."""
    if not plan.inventory:
        return
    pool = Pool(list(plan.inventory), cores=1)
    placed: dict[str, list[int]] = {}
    for job in sorted(plan.jobs, key=lambda j: -j.planned_mb):
        if not job.fits:
            continue
        request = Request(gpus=1, gpu_memory_gb=math.ceil(job.planned_mb) / 1024, threads=1)
        try:
            pool.check(request)
        except NeverFits:
            continue
        assignment = pool.place(request, default_threads=0)
        if assignment is not None:
            placed[job.variant] = list(assignment.gpus)
    plan.jobs = [replace(j, gpus=placed.get(j.variant, []),
                         note=_joined(j.note, "" if j.variant in placed or not j.fits
                                      else "waits for a GPU the others free"))
                 for j in plan.jobs]


def _joined(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# ---------------------------------------------------------------------------- a run's peaks


def fold_run_peaks(home: Path, run_id: str, jobs: Iterable[JobState]) -> list[Plan]:
    """Fold the peak memory each done training job of run ``run_id`` reports (results.json,
    at its micro-batch) into the latest plan of its preset on its kind of device, and rewrite
    that plan; returns the plans rewritten. A kind of device without a plan learns nothing:
    one point gives no part per clip."""
    peaks: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for job in jobs:
        measured = run_peak(job)
        if measured is not None:
            kind, micro, peak = measured
            at = peaks.setdefault((job.preset, kind), {}).setdefault(job.variant, {})
            at[micro] = max(peak, at.get(micro, 0.0))  # seeds of a variant: the largest
    updated = []
    for (preset, kind), by_variant in peaks.items():
        plan = load_plan(home, preset, kind)
        if plan is not None:
            plan = with_peaks(plan, by_variant, f"run {run_id}")
            write_json_atomic(latest_plan_path(home, preset, kind), plan.to_dict())
            updated.append(plan)
    return updated


def run_peak(job: JobState) -> tuple[str, int, float] | None:
    """(device kind, micro-batch, peak MB) a done real training job's results.json reports."""
    if job.stage != Stage.done or not job.results_path.exists():
        return None
    try:
        results = load_results(job.results_path)
    except CorruptFile as error:
        warn_corrupt(error.path, error.reason, "its peak memory is left out of the plan")
        return None
    train = results.config.get("train")
    micro = train.get("micro_batch") if isinstance(train, dict) else None
    peak = results.timings.peak_memory_mb
    if results.config.get("rehearsal") is True or not isinstance(micro, int) or micro < 1:
        return None
    if peak is None or not math.isfinite(peak) or peak <= 0:
        return None
    device = results.environment.get("device")
    if not isinstance(device, str):
        return None
    return device_kind(device), micro, peak


def with_peaks(plan: Plan, peaks: dict[str, dict[int, float]], source: str) -> Plan:
    """``plan`` planned again with each variant's measured peaks (micro-batch -> MB) from
    ``source``: the line stays the rehearsal's (a run's peak is its whole process's, not a
    step's), but at those micro-batches the memory is measured."""
    capacity = largest_gpu_mb(plan.inventory)
    jobs = []
    for job in plan.jobs:
        new = {m: p for m, p in peaks.get(job.variant, {}).items() if job.batch_size % m == 0}
        model = job.memory_model()
        sources = {p.micro_batch: p.source for p in job.measured if p.source != REHEARSAL_SOURCE}
        jobs.append(plan_job(job.variant, replace(model, measured={**model.measured, **new}),
                             job.batch_size, capacity, precision=job.precision,
                             flops_per_step=job.flops_per_step,
                             steps_per_epoch=job.steps_per_epoch, epochs=job.epochs,
                             evaluation_flops=job.evaluation_flops,
                             evaluation_precision=job.evaluation_precision,
                             sources={**sources, **dict.fromkeys(new, source)}))
    replanned = replace(plan, jobs=jobs)
    place(replanned)
    return replanned


# ---------------------------------------------------------------------------- plan.json


def write_plan(plan: Plan, run_dir: Path, home: Path) -> Path:
    """plan.json in the run's folder, and the latest plan of this preset and device kind."""
    path = write_json_atomic(run_dir / PLAN_FILE, plan.to_dict())
    write_json_atomic(latest_plan_path(home, plan.preset, plan.measured_on), plan.to_dict())
    return path


def latest_plan_path(home: Path, preset: str, device_kind: str) -> Path:
    return home / "plans" / f"{preset}-{device_kind}.json"


def load_plan(home: Path, preset: str, device_kind: str) -> Plan | None:
    """The latest plan of ``preset`` measured on ``device_kind``, if any (an unreadable one
    is said in a warning and not used)."""
    path = latest_plan_path(home, preset, device_kind)
    if not path.exists():
        return None
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        warn_corrupt(path, f"unreadable plan ({type(error).__name__}: {error})",
                     "planning from the config's resources")
        return None
