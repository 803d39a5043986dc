"""Device slots: which GPUs exist, and where each job goes.

The placement rule is a pure function of a GPU inventory and the jobs' requests, so it is
tested with simulated machines (0, 1, 4 GPUs, mixed sizes):

- A GPU job goes to an idle GPU if one has room (one job per GPU while GPUs are free), else
  it is packed onto a busy GPU whose remaining memory holds its estimate (best fit), else it
  waits. A job whose estimate exceeds every GPU can never run and says so.
- With no GPU, every job runs on CPU: max(1, cores // threads) of them at once, each with its
  share of threads (`OMP_NUM_THREADS`), so parallel CPU jobs don't fight over cores.

GPU discovery tries NVML (pynvml), then `nvidia-smi`, then torch (imported lazily, only
here), and `ORCH_GPUS` overrides all three ("" = none; "0:24576,1:8192" = index:MiB).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

GPUS_ENV = "ORCH_GPUS"
CORES_ENV = "ORCH_CPU_CORES"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Gpu:
    index: int
    total_mb: int
    free_mb: int


@dataclass(frozen=True)
class Request:
    """What one job asks for. gpus=0 means CPU only; threads=None means an equal share."""

    gpus: int = 1
    gpu_memory_gb: float = 0.0
    threads: int | None = None
    # Estimated seconds of work alone on one GPU (a plan's run time), if known: the scheduler
    # then orders and places by it (``scheduler.Scheduler``).
    work_s: float | None = None

    @property
    def memory_mb(self) -> int:
        return int(self.gpu_memory_gb * 1024)


@dataclass(frozen=True)
class Assignment:
    device: str  # "cpu" or "cuda:0,1"
    gpus: tuple[int, ...]
    threads: int
    memory_mb: int = 0  # reserved on each of its GPUs

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(i) for i in self.gpus)


class NeverFits(ValueError):
    """A request no GPU of this machine can hold."""


@dataclass
class Pool:
    """What is left of a machine: free memory and job count per GPU, free CPU threads."""

    gpus: list[Gpu]
    cores: int
    free_mb: dict[int, int] = field(default_factory=dict)
    jobs_on: dict[int, int] = field(default_factory=dict)
    free_threads: int = 0
    cpu_jobs: int = 0

    def __post_init__(self) -> None:
        self.cores = max(1, self.cores)
        self.free_mb = {g.index: g.free_mb for g in self.gpus}
        self.jobs_on = {g.index: 0 for g in self.gpus}
        self.free_threads = self.cores

    def check(self, req: Request) -> None:
        """Raise NeverFits if no amount of waiting would let this request run."""
        if req.gpus == 0 or not self.gpus:
            return
        if req.gpus > len(self.gpus):
            raise NeverFits(f"needs {req.gpus} GPUs; this machine has {len(self.gpus)}")
        fitting = [g for g in self.gpus if g.free_mb >= req.memory_mb]
        if len(fitting) < req.gpus:
            best = max(g.free_mb for g in self.gpus) / 1024
            raise NeverFits(
                f"needs {req.gpu_memory_gb:g} GB per GPU; the largest GPU has {best:.1f} GB free"
            )

    def place(self, req: Request, default_threads: int, *, on: int | None = None
              ) -> Assignment | None:
        """An assignment for req if it fits now (and take it), else None. ``on``: only on
        that GPU (a one-GPU request)."""
        threads = min(req.threads or default_threads, self.cores)
        if req.gpus == 0 or not self.gpus:
            if self.cpu_jobs and threads > self.free_threads:
                return None
            self.free_threads -= threads
            self.cpu_jobs += 1
            return Assignment("cpu", (), threads)
        need = req.memory_mb
        fitting = [i for i, free in self.free_mb.items()
                   if free >= need and on in (None, i)]
        if len(fitting) < req.gpus:
            return None
        # Idle GPUs first (spread while there is room), then best fit (pack small jobs).
        fitting.sort(key=lambda i: (self.jobs_on[i] > 0, self.free_mb[i] if self.jobs_on[i]
                                    else -self.free_mb[i], i))
        chosen = tuple(sorted(fitting[: req.gpus]))
        for i in chosen:
            self.free_mb[i] -= need
            self.jobs_on[i] += 1
        return Assignment("cuda:" + ",".join(map(str, chosen)), chosen, threads, need)

    def release(self, a: Assignment) -> None:
        if not a.gpus:
            self.free_threads += a.threads
            self.cpu_jobs -= 1
            return
        for i in a.gpus:
            self.free_mb[i] += a.memory_mb
            self.jobs_on[i] -= 1


def thread_share(n_jobs: int, cores: int) -> int:
    """Threads for a job that names none: the cores split evenly over the jobs (at least 1)."""
    cores = max(1, cores)
    return max(1, cores // max(1, min(n_jobs, cores)))


def assign(
    gpus: Sequence[Gpu], requests: Sequence[Request], cores: int
) -> list[Assignment | None]:
    """Place the requests in order on an idle machine; None for the ones that must wait.

    Raises NeverFits for a request that cannot run on this machine at all.
    """
    pool = Pool(list(gpus), cores)
    share = thread_share(len(requests), cores)
    for r in requests:
        pool.check(r)
    return [pool.place(r, share) for r in requests]


# ---------------------------------------------------------------------------- discovery


def cpu_cores() -> int:
    env = os.environ.get(CORES_ENV)
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_gpus_env(text: str) -> list[Gpu]:
    """"0:24576,1:8192" (index:MiB, all free) or "0:24576:20000" (index:total:free)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        nums = [int(x) for x in part.split(":")]
        index, total = nums[0], nums[1]
        out.append(Gpu(index, total, nums[2] if len(nums) > 2 else total))
    return out


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Output of `nvidia-smi --query-gpu=index,memory.total,memory.free
    --format=csv,noheader,nounits`: one "0, 24576, 24000" line per GPU."""
    out = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        out.append(Gpu(int(parts[0]), int(float(parts[1])), int(float(parts[2]))))
    return out


def from_nvml(nvml: Any) -> list[Gpu]:
    nvml.nvmlInit()
    try:
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            mem = nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i))
            gpus.append(Gpu(i, int(mem.total) // MIB, int(mem.free) // MIB))
        return gpus
    finally:
        nvml.nvmlShutdown()


def from_nvidia_smi(run: Callable[[list[str]], str]) -> list[Gpu]:
    text = run(
        [
            "nvidia-smi",
            "--query-gpu=index,memory.total,memory.free",
            "--format=csv,noheader,nounits",
        ]
    )
    return parse_nvidia_smi(text)


def from_torch(torch: Any) -> list[Gpu]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append(Gpu(i, int(total) // MIB, int(free) // MIB))
    return gpus


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=20).stdout


def _import(name: str) -> ModuleType | None:
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 - a broken optional import just means "not this way"
        return None


def discover_gpus(
    nvml: Any = None,
    run: Callable[[list[str]], str] | None = None,
    torch: Any = None,
    which: Callable[[str], str | None] = shutil.which,
) -> tuple[list[Gpu], str]:
    """The GPUs of this machine and how they were found ("env", "nvml", "nvidia-smi",
    "torch" or "none"). Each path can be fed a fake of its outside tool."""
    env = os.environ.get(GPUS_ENV)
    if env is not None:
        return parse_gpus_env(env), "env"
    nvml = nvml if nvml is not None else _import("pynvml")
    if nvml is not None:
        try:
            return from_nvml(nvml), "nvml"
        except Exception:  # noqa: BLE001 - no driver: fall through to the next way
            pass
    if run is not None or which("nvidia-smi"):
        try:
            return from_nvidia_smi(run or _run), "nvidia-smi"
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    torch = torch if torch is not None else _import("torch")
    if torch is not None:
        try:
            return from_torch(torch), "torch"
        except Exception:  # noqa: BLE001
            pass
    return [], "none"
