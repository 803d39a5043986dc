"""Device slots from simulated inventories, the queue, and each way of finding GPUs."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.devices import (
    Gpu,
    NeverFits,
    Request,
    assign,
    discover_gpus,
    parse_nvidia_smi,
    thread_share,
)
from orchestrator.scheduler import Scheduler
from tests.orch_fixtures import *  # noqa: F403

GB = 1024


def test_no_gpu_cpu_slots_follow_cores_and_threads() -> None:
    # 8 cores, 4 threads each: two jobs run, the third waits.
    out = assign([], [Request(1, 4, 4)] * 3, cores=8)
    assert [a.device if a else None for a in out] == ["cpu", "cpu", None]
    assert all(a.threads == 4 and a.cuda_visible_devices == "" for a in out[:2] if a)
    # No thread count given: the cores are split evenly over the jobs.
    shares = assign([], [Request(0, 0, None)] * 2, cores=8)
    assert [a.threads for a in shares if a] == [4, 4]
    # A job asking for more threads than the machine has still runs, alone.
    big = assign([], [Request(0, 0, 16), Request(0, 0, 1)], cores=2)
    assert big[0] is not None and big[0].threads == 2 and big[1] is None
    assert thread_share(3, 2) == 1 and thread_share(1, 8) == 8


def test_one_gpu_packs_small_jobs_by_memory() -> None:
    gpu = [Gpu(0, 24 * GB, 24 * GB)]
    out = assign(gpu, [Request(1, 8), Request(1, 8), Request(1, 8), Request(1, 8)], cores=8)
    assert [a.device if a else None for a in out] == ["cuda:0", "cuda:0", "cuda:0", None]
    assert all(a.cuda_visible_devices == "0" for a in out if a)


def test_four_gpus_spread_one_job_per_gpu_first() -> None:
    gpus = [Gpu(i, 16 * GB, 16 * GB) for i in range(4)]
    out = assign(gpus, [Request(1, 4)] * 6, cores=8)
    devices = [a.device for a in out if a]
    assert devices[:4] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert len(devices) == 6  # the last two are packed next to running jobs


def test_mixed_sizes_big_job_goes_where_it_fits_and_multi_gpu() -> None:
    gpus = [Gpu(0, 8 * GB, 8 * GB), Gpu(1, 24 * GB, 20 * GB)]
    out = assign(gpus, [Request(1, 18), Request(1, 6), Request(1, 6)], cores=4)
    assert [a.device if a else None for a in out] == ["cuda:1", "cuda:0", None]
    two = assign(gpus, [Request(2, 6)], cores=4)
    assert two[0] is not None and two[0].gpus == (0, 1) and two[0].device == "cuda:0,1"
    with pytest.raises(NeverFits, match="largest GPU has 20.0 GB free"):
        assign(gpus, [Request(1, 40)], cores=4)
    with pytest.raises(NeverFits, match="needs 3 GPUs"):
        assign(gpus, [Request(3, 1)], cores=4)


def test_cpu_only_request_on_a_gpu_machine_stays_on_cpu() -> None:
    out = assign([Gpu(0, 16 * GB, 16 * GB)], [Request(0, 0, 2)], cores=4)
    assert out[0] is not None and out[0].device == "cpu" and out[0].gpus == ()


def test_scheduler_queue_starts_waiting_job_when_a_slot_frees() -> None:
    s: Scheduler[str] = Scheduler([Gpu(0, 10 * GB, 10 * GB)], cores=4)
    for name in ("a", "b", "c"):
        s.submit(name, Request(1, 6))
    assert [k for k, _ in s.ready()] == ["a"]
    assert s.ready() == []
    s.release("a")
    assert [k for k, _ in s.ready()] == ["b"]
    s.release("b")
    assert [k for k, _ in s.ready()] == ["c"]
    s.release("c")
    assert s.idle



def test_with_run_times_known_the_longest_job_starts_first() -> None:
    """Two 80 GB GPUs, jobs of 1, 5 and 4 hours that each need most of a GPU: 5 h and 4 h
    start, the 1 h job waits for the GPU that frees first (the 4 h one's)."""
    now = 0.0
    s: Scheduler[str] = Scheduler([Gpu(i, 80 * GB, 80 * GB) for i in range(2)], cores=4,
                                  clock=lambda: now)
    for name, hours in (("short", 1.0), ("long", 5.0), ("mid", 4.0)):
        s.submit(name, Request(1, 60, work_s=hours * 3600))
    assert s.estimated
    assert {k: a.gpus for k, a in s.ready()} == {"long": (0,), "mid": (1,)}
    now = 4 * 3600.0
    assert s.remaining_s(0, now) == 3600.0 and s.remaining_s(1, now) == 0.0
    s.release("mid")
    assert {k: a.gpus for k, a in s.ready()} == {"short": (1,)}


def test_with_run_times_known_a_job_goes_to_the_gpu_free_of_work_soonest() -> None:
    """A 10 h job on GPU 0; a 3 h job goes to GPU 1, and the 1 h job beside it there, not
    beside the 10 h one. Without estimates the queue order puts the 1 h job on GPU 1 and
    the 3 h one on the fuller GPU (best fit), beside the 10 h job: 13 h of work on GPU 0."""
    def scheduler(with_estimates: bool) -> Scheduler[str]:
        s: Scheduler[str] = Scheduler([Gpu(0, 80 * GB, 80 * GB), Gpu(1, 80 * GB, 80 * GB)],
                                      cores=4, clock=lambda: 0.0)
        for name, gb, hours in (("ten", 30, 10.0), ("one", 20, 1.0), ("three", 30, 3.0)):
            s.submit(name, Request(1, gb, work_s=hours * 3600 if with_estimates else None))
        return s

    assert {k: a.gpus for k, a in scheduler(True).ready()} == \
        {"ten": (0,), "three": (1,), "one": (1,)}
    assert {k: a.gpus for k, a in scheduler(False).ready()} == \
        {"ten": (0,), "one": (1,), "three": (0,)}


def test_one_job_without_an_estimate_keeps_the_queue_order() -> None:
    s: Scheduler[str] = Scheduler([Gpu(0, 10 * GB, 10 * GB)], cores=4)
    s.submit("a", Request(1, 6, work_s=60.0))
    s.submit("b", Request(1, 6))  # no plan measured it
    s.submit("c", Request(1, 6, work_s=600.0))
    assert not s.estimated
    assert [k for k, _ in s.ready()] == ["a"]


def test_cpu_jobs_left_running_take_the_freed_cores_once_nothing_waits() -> None:
    s: Scheduler[str] = Scheduler([], cores=4)
    for name in ("a", "b", "c"):
        s.submit(name, Request(0))
    s.submit("fixed", Request(0, threads=1))  # named its threads: keeps them
    s.plan_threads()  # 4 jobs on 4 cores: one thread each
    assert {k: a.threads for k, a in s.ready()} == {"a": 1, "b": 1, "c": 1, "fixed": 1}
    assert s.lend_idle_cores() == {}  # every core is busy
    s.release("a")
    assert s.lend_idle_cores() == {}  # one free core cannot give b and c a whole thread more
    s.release("b")
    assert s.lend_idle_cores() == {"c": 3}  # 4 cores - 1 held by "fixed"
    assert s.pool.free_threads == 0
    s.release("c")
    s.release("fixed")
    assert s.pool.free_threads == 4 and s.idle


def test_no_cores_are_lent_while_a_job_waits() -> None:
    s: Scheduler[str] = Scheduler([], cores=2)
    for name in ("a", "b", "c"):
        s.submit(name, Request(0))
    s.plan_threads()
    assert len(s.ready()) == 2
    s.release("a")
    assert s.lend_idle_cores() == {}  # "c" is still queued: its slot comes first
    assert [k for k, _ in s.ready()] == ["c"]


# ---------------------------------------------------------------------------- discovery

SMI = "0, 24576, 23000\n1, 8192, 8000\n"


class FakeNvml:
    def __init__(self, mems: list[tuple[int, int]]) -> None:
        self.mems = mems
        self.calls: list[str] = []

    def nvmlInit(self) -> None:  # noqa: N802 - the real API's names
        self.calls.append("init")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.mems)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        total, free = self.mems[h]
        return SimpleNamespace(total=total * 2**20, free=free * 2**20, used=0)


def test_nvml_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_GPUS")
    nvml = FakeNvml([(16000, 15000)])
    gpus, how = discover_gpus(nvml=nvml, run=lambda argv: SMI)
    assert how == "nvml" and gpus == [Gpu(0, 16000, 15000)]
    assert nvml.calls == ["init", "shutdown"]


def test_nvidia_smi_output_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_GPUS")
    seen: list[list[str]] = []

    def run(argv: list[str]) -> str:
        seen.append(argv)
        return SMI

    class BrokenNvml(FakeNvml):
        def nvmlInit(self) -> None:  # noqa: N802
            raise RuntimeError("NVML Shared Library Not Found")

    gpus, how = discover_gpus(nvml=BrokenNvml([]), run=run)
    assert how == "nvidia-smi"
    assert gpus == [Gpu(0, 24576, 23000), Gpu(1, 8192, 8000)]
    assert "--query-gpu=index,memory.total,memory.free" in seen[0]
    assert parse_nvidia_smi("No devices were found\n") == []


def test_torch_is_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCH_GPUS")

    def no_smi(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(9, argv)

    cuda = SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2,
        mem_get_info=lambda i: ((10 - i) * 2**30, 12 * 2**30),
    )
    gpus, how = discover_gpus(nvml=_no_nvml(), run=no_smi,
                              torch=SimpleNamespace(cuda=cuda))
    assert how == "torch"
    assert gpus == [Gpu(0, 12 * GB, 10 * GB), Gpu(1, 12 * GB, 9 * GB)]
    no_cuda = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: False))
    assert discover_gpus(nvml=_no_nvml(), run=no_smi, torch=no_cuda) == ([], "torch")


def test_env_overrides_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_GPUS", "0:24576,1:8192:4000")
    assert discover_gpus(nvml=FakeNvml([(1, 1)])) == (
        [Gpu(0, 24576, 24576), Gpu(1, 8192, 4000)], "env")


def _no_nvml() -> Any:
    class Missing:
        def nvmlInit(self) -> None:  # noqa: N802
            raise OSError("no driver")

    return Missing()
