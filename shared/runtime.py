"""Where and how a run executes: device, threads, mixed precision, memory, environment facts.

The device is chosen at run time: CUDA when a GPU is visible (the orchestrator sets
``CUDA_VISIBLE_DEVICES`` per job, blank for CPU jobs), else the CPU; a device asked for by
name must exist, or the run stops before it loads anything. Mixed precision is used on CUDA
only: bf16 where the GPU supports it (no loss scaling needed), else fp16 with a gradient
scaler. On the CPU a run stays fp32, which keeps CPU runs deterministic; a rehearsal's
training steps take the precision of the CUDA run they measure for (``rehearsal_precision``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from orchestrator.client import ThreadGrant
from shared.errors import ConfigError


@dataclass(frozen=True)
class Precision:
    """What autocast does on this device: ``dtype`` None means plain fp32."""

    device_type: str
    dtype: torch.dtype | None
    needs_grad_scaler: bool

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to ``dtype``; for fp32, autocast off, also inside an autocast region (a
        pass stated fp32 that runs within a training step stays fp32)."""
        if self.dtype is None:
            if torch.amp.is_autocast_available(self.device_type):
                return torch.autocast(device_type=self.device_type, enabled=False)
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        """"fp32", "bf16" or "fp16": what the forward passes compute in."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


# No autocast: every pass in fp32 (the device type does not matter without a dtype).
FP32 = Precision("cpu", None, False)

_DEVICE_RE = re.compile(r"cpu|cuda(:\d+)?")


def select_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cpu", "cuda", "cuda:1") must exist; without it, CUDA if visible, else
    the CPU. A CUDA device always comes back with its index ("cuda" is "cuda:0")."""
    if requested is None:
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if not _DEVICE_RE.fullmatch(requested):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {requested!r}")
    device = torch.device(requested)
    if device.type == "cpu":
        return device
    # is_available() first: device_count() alone may report GPUs a broken driver cannot use.
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = device.index or 0
    if index >= visible:
        seen = "no CUDA GPU is visible" if visible == 0 else f"only {visible} CUDA GPU(s) visible"
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        mask_text = "unset" if mask is None else f"{mask!r}"
        raise ConfigError(
            f"--device {requested} asked for, but {seen} (CUDA_VISIBLE_DEVICES is {mask_text}): "
            "use --device cpu, or run where CUDA_VISIBLE_DEVICES leaves that GPU visible"
        )
    return torch.device("cuda", index)


def select_precision(
    device_type: str, *, enabled: bool = True, bf16_supported: bool | None = None
) -> Precision:
    """AMP policy as a pure function of the device, so it is testable without a GPU."""
    if device_type != "cuda" or not enabled:
        return Precision(device_type, None, False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    if bf16_supported:
        return Precision(device_type, torch.bfloat16, False)
    return Precision(device_type, torch.float16, True)


def rehearsal_precision(device_type: str, *, enabled: bool = True,
                        cpu_bf16: bool | None = None) -> Precision:
    """The precision a rehearsal's training steps run in: on CUDA the run's own; on the CPU,
    for a preset that trains under autocast, bf16, what a CUDA run uses on a GPU with bf16
    (its activations then take the bytes they will take there), where the CPU computes bf16
    natively (elsewhere bf16 would be emulated, slower than fp32) - else fp32."""
    if device_type == "cuda" or not enabled:
        return select_precision(device_type, enabled=enabled)
    if cpu_bf16 is None:
        cpu_bf16 = _cpu_has_native_bf16()
    return Precision(device_type, torch.bfloat16 if cpu_bf16 else None, False)


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> int:
    """Use ``threads`` (or OMP_NUM_THREADS, or all cores) for intra-op parallelism."""
    if threads is None:
        from_env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(from_env) if from_env.isdigit() and int(from_env) > 0 else os.cpu_count() or 1
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


class ThreadBudget:
    """Applies the thread counts orch grants a running job (``orchestrator.client.
    ThreadGrant``: when the other jobs of a run end, orch writes a larger count to the file
    named by ``ORCH_THREADS_FILE``) with ``torch.set_num_threads``, so the cores they freed
    do not idle. A changed thread count changes float summation order, so a run that was
    granted threads is reproducible to rounding, not bit for bit. Without the variable (a
    run started by hand) it does nothing."""

    def __init__(self, check_every_s: float = 2.0) -> None:
        self.grant = ThreadGrant(check_every_s)

    def poll(self) -> int | None:
        """The new thread count if a new grant was applied, else None."""
        threads = self.grant.poll()
        if threads is None or threads == torch.get_num_threads():
            return None
        torch.set_num_threads(threads)
        return threads


@dataclass(frozen=True)
class StepBudget:
    """A pretraining budget: a step cap and a wall-time cap, whichever comes first.

    The learning rate warms up linearly over ``warmup_steps``, then decays on a cosine to
    ``final_lr_ratio`` of ``lr`` following the larger of the step and time fractions, so a
    run cut short by the clock still ends at its low rate.
    """

    max_steps: int
    time_limit_s: float
    lr: float
    warmup_steps: int
    final_lr_ratio: float

    def progress(self, step: int, elapsed_s: float) -> float:
        return min(1.0, max(step / self.max_steps, elapsed_s / self.time_limit_s))

    def learning_rate(self, step: int, elapsed_s: float) -> float:
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress(step, elapsed_s)))
        return self.lr * (self.final_lr_ratio + (1 - self.final_lr_ratio) * cosine)


@dataclass(frozen=True)
class BudgetStep:
    step: int  # steps done before this one
    elapsed_s: float  # since the first step
    progress: float  # of the budget, in [0, 1]


def budget_steps(budget: StepBudget, optimizer: torch.optim.Optimizer,
                 log: Callable[[str], None]) -> Iterator[BudgetStep]:
    """One item per optimizer step until either cap, with every param group's lr set for it;
    between steps, the job follows the thread grants of orch (``ThreadBudget``)."""
    threads = ThreadBudget()
    start = time.perf_counter()
    step = 0
    while step < budget.max_steps:
        elapsed = time.perf_counter() - start
        if elapsed >= budget.time_limit_s:
            return
        lr = budget.learning_rate(step, elapsed)
        for group in optimizer.param_groups:
            group["lr"] = lr
        yield BudgetStep(step, elapsed, budget.progress(step, elapsed))
        step += 1
        if (granted := threads.poll()) is not None:
            log(f"threads: now {granted} (cores freed by ended jobs)")


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode (dropout off, BatchNorm on its running statistics) inside the
    block; back in the mode it had afterwards, even if the block raises."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process since the last ``reset_peak_memory`` (or its start): CUDA
    allocator peak on a GPU, peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _peak_rss_mb()


def peak_memory(device: torch.device) -> dict[str, Any]:
    """What a plan needs to know of this process's peak memory since the last reset: on a GPU
    what the caching allocator reserved (what other processes cannot have) and, below it,
    what tensors held; on the CPU the peak resident set."""
    if device.type == "cuda":
        return {"memory_source": "cuda_max_memory_reserved",
                "peak_memory_mb": torch.cuda.max_memory_reserved(device) / 2**20,
                "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    return {"memory_source": "process_peak_rss", "peak_memory_mb": _peak_rss_mb(),
            "peak_allocated_mb": None}


_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak from what the process holds now; False where that is impossible (a
    CPU process off Linux: its peak then stays the one since the process started).

    On the CPU the heap that freed tensors left to the C allocator goes back to the system
    first: without that, memory freed in an earlier phase would still count as resident and
    the next phase's peak could not come out below it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    import gc

    gc.collect()
    _return_free_heap()
    try:
        with open(_PROC_CLEAR_REFS, "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak resident set to the current one
    except OSError:
        return False
    return True


def _return_free_heap() -> None:
    """glibc's malloc_trim(0): free heap pages back to the system (nothing elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's malloc_trim, looked up once in the symbols the process has loaded."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # a C library without it (musl)
        return None


def _peak_rss_mb() -> float:
    """The peak resident set: VmHWM on Linux (what ``reset_peak_memory`` resets), else the
    process's lifetime peak from getrusage."""
    try:
        with open(_PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# Fault injection for tests of the out-of-memory path (requirements.md, section 3).
OOM_INJECTION_ENV = "SHARED_INJECT_OOM_ABOVE"


def inject_oom(micro_batch: int) -> None:
    """Raise the error a CUDA device gives when memory runs out, if ``SHARED_INJECT_OOM_ABOVE``
    is set to K and ``micro_batch`` > K; the loop calls it before its first micro-step."""
    limit = os.environ.get(OOM_INJECTION_ENV, "").strip()
    if not limit:
        return
    if not limit.isdigit():
        raise ConfigError(f"{OOM_INJECTION_ENV} must be a non-negative integer, got {limit!r}")
    if micro_batch > int(limit):
        raise torch.OutOfMemoryError(
            f"CUDA out of memory (injected: micro-batch {micro_batch} > {limit})")


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "platform": platform.platform(),
        "threads": threads,
    }
