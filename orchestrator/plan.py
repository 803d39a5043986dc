"""The plan: each job's micro-batch, memory and GPU, from what a rehearsal measured.

A rehearsal runs every training job at its preset's true shapes at two micro-batch sizes
and reports the peak memory of each (``rehearsal.json``, requirements.md section 3). Memory grows
linearly with the clips of a micro-batch, so two points give a fixed part and a part per
clip: ``memory(m) = fixed + per_clip * m``. For a GPU inventory the plan then picks, per
job, the largest micro-batch that divides the batch and fits the largest GPU with a margin
for the CUDA context, and packs the jobs on the GPUs the way the launcher will (the
placement rule of ``devices.Pool``). A job that fits no GPU even at one clip is named with
what it needs.

``plan.json`` goes into the rehearsal's run folder and, as the latest plan of that preset
on that kind of device, into ``<state>/plans/``; `orch train`/`run` plan from it, falling
back to the config's resources when nothing was measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.devices import Gpu, NeverFits, Pool, Request
from orchestrator.formats import write_json_atomic

CUDA_CONTEXT_MB = 1024  # what a process's CUDA context takes before its first tensor
FRAGMENTATION = 0.05  # the allocator's slack over the peak it reserved, as a fraction
REHEARSAL_FILE = "rehearsal.json"
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class Measurement:
    """One rehearsal job's figures (its rehearsal.json)."""

    micro_batch: int
    batch_size: int
    peak_memory_mb: float
    memory_source: str  # cuda_max_memory_reserved or process_peak_rss
    device: str
    flops_per_micro_batch: float | None = None
    step_seconds: float | None = None

    @classmethod
    def read(cls, path: Path) -> Measurement:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(micro_batch=int(raw["micro_batch"]), batch_size=int(raw["batch_size"]),
                   peak_memory_mb=float(raw["peak_memory_mb"]),
                   memory_source=str(raw["memory_source"]), device=str(raw["device"]),
                   flops_per_micro_batch=raw.get("flops_per_micro_batch"),
                   step_seconds=raw.get("step_seconds"))


@dataclass(frozen=True)
class MemoryModel:
    """memory(m) = fixed_mb + per_clip_mb * m, from two measured micro-batch sizes."""

    fixed_mb: float
    per_clip_mb: float
    measured: dict[int, float]  # micro-batch -> measured peak, MB

    @classmethod
    def fit(cls, points: list[Measurement]) -> MemoryModel:
        by_size = {p.micro_batch: p.peak_memory_mb for p in points}
        if len(by_size) < 2:
            (size, peak), = by_size.items()
            return cls(fixed_mb=0.0, per_clip_mb=peak / size, measured=by_size)
        (m1, p1), (m2, p2) = sorted(by_size.items())[:2]
        per_clip = max(0.0, (p2 - p1) / (m2 - m1))
        return cls(fixed_mb=p1 - per_clip * m1, per_clip_mb=per_clip, measured=by_size)

    def at(self, micro_batch: int) -> tuple[float, str]:
        """(memory MB, "measured" or "extrapolated") at ``micro_batch`` clips."""
        if micro_batch in self.measured:
            return self.measured[micro_batch], "measured"
        return self.fixed_mb + self.per_clip_mb * micro_batch, "extrapolated"


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

    @property
    def planned_mb(self) -> float:
        return self.memory_mb + self.margin_mb


@dataclass
class Plan:
    preset: str
    measured_on: str  # "cpu" or "cuda": where the rehearsal ran
    memory_source: str
    inventory: list[Gpu]
    jobs: list[JobPlan]

    def job(self, variant: str) -> JobPlan | None:
        return next((j for j in self.jobs if j.variant == variant), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for raw, job in zip(data["jobs"], self.jobs, strict=True):
            raw["planned_mb"] = job.planned_mb
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Plan:
        jobs = [JobPlan(**{k: v for k, v in j.items() if k in JobPlan.__dataclass_fields__})
                for j in raw["jobs"]]
        return cls(preset=raw["preset"], measured_on=raw["measured_on"],
                   memory_source=raw["memory_source"],
                   inventory=[Gpu(**g) for g in raw["inventory"]], jobs=jobs)


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


def build_plan(preset: str, measurements: dict[str, list[Measurement]],
               inventory: list[Gpu]) -> Plan:
    """Per variant: micro-batch, memory at it and its GPU(s) on ``inventory``."""
    capacity = max((g.total_mb for g in inventory), default=None)
    jobs: list[JobPlan] = []
    for variant, points in measurements.items():
        model = MemoryModel.fit(points)
        batch = points[0].batch_size
        micro, fits = choose_micro_batch(model, batch, capacity)
        memory, basis = model.at(micro)
        flops = points[0].flops_per_micro_batch
        per_step = flops / points[0].micro_batch * batch if flops else None
        note = "" if fits else (
            f"needs {(memory + margin_for(memory)) / 1024:.1f} GB at one clip a micro-batch; "
            f"the largest GPU has {capacity / 1024:.1f} GB" if capacity else "")
        jobs.append(JobPlan(
            variant=variant, batch_size=batch, micro_batch=micro,
            accumulation=batch // micro, memory_mb=memory, memory_basis=basis,
            margin_mb=margin_for(memory) if inventory else 0.0, fixed_mb=model.fixed_mb,
            per_clip_mb=model.per_clip_mb, fits=fits, note=note, flops_per_step=per_step))
    sample = next(iter(measurements.values()))[0]
    plan = Plan(preset=preset, measured_on="cuda" if sample.device.startswith("cuda") else "cpu",
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
    plan.jobs = [JobPlan(**{**asdict(j), "gpus": placed.get(j.variant, []),
                            "note": j.note or ("" if j.variant in placed else
                                               "waits for a GPU the others free")})
                 for j in plan.jobs]


def write_plan(plan: Plan, run_dir: Path, home: Path) -> Path:
    """plan.json in the run's folder, and the latest plan of this preset and device kind."""
    path = write_json_atomic(run_dir / PLAN_FILE, plan.to_dict())
    write_json_atomic(latest_plan_path(home, plan.preset, plan.measured_on), plan.to_dict())
    return path


def latest_plan_path(home: Path, preset: str, device_kind: str) -> Path:
    return home / "plans" / f"{preset}-{device_kind}.json"


def load_plan(home: Path, preset: str, device_kind: str) -> Plan | None:
    """The last rehearsal's plan of ``preset`` measured on ``device_kind``, if any."""
    path = latest_plan_path(home, preset, device_kind)
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
