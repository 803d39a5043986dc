"""Device and mixed-precision choice: pure functions, checked on the CPU for every case."""

from __future__ import annotations

import sys

import pytest
import torch

from orchestrator.client import THREADS_FILE_ENV
from shared import runtime
from shared.errors import ConfigError


def test_cpu_runs_in_fp32_without_scaler():
    precision = runtime.select_precision("cpu")
    assert precision.dtype is None and not precision.needs_grad_scaler
    with precision.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize(
    ("bf16", "dtype", "scaler"), [(True, torch.bfloat16, False), (False, torch.float16, True)]
)
def test_cuda_uses_bf16_where_supported_else_fp16_with_scaler(bf16, dtype, scaler):
    precision = runtime.select_precision("cuda", bf16_supported=bf16)
    assert precision.dtype == dtype
    assert precision.needs_grad_scaler is scaler


def test_amp_can_be_switched_off_on_cuda():
    assert runtime.select_precision("cuda", enabled=False, bf16_supported=True).dtype is None


def test_device_defaults_to_cpu_without_gpu_and_refuses_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runtime.select_device().type == "cpu"
    assert runtime.select_device("cpu") == torch.device("cpu")
    for asked in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="no CUDA GPU.*CUDA_VISIBLE_DEVICES is ''"):
            runtime.select_device(asked)


def test_device_with_gpus_is_indexed_and_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert runtime.select_device() == torch.device("cuda", 0)  # the automatic choice
    assert runtime.select_device("cuda") == torch.device("cuda", 0)
    assert runtime.select_device("cuda:1") == torch.device("cuda", 1)
    assert runtime.select_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="only 2 CUDA GPU.*CUDA_VISIBLE_DEVICES is unset"):
        runtime.select_device("cuda:2")


@pytest.mark.parametrize("asked", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_device_names_other_than_cpu_cuda_cuda_n_are_refused(asked):
    with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
        runtime.select_device(asked)


def test_precision_names_what_the_forward_computes_in():
    assert runtime.select_precision("cpu").name == "fp32"
    assert runtime.select_precision("cuda", bf16_supported=True).name == "bf16"
    assert runtime.select_precision("cuda", bf16_supported=False).name == "fp16"


def test_a_rehearsal_on_the_cpu_steps_in_the_precision_of_the_cuda_run():
    """bf16 where the CPU computes it natively and the preset uses autocast; else fp32."""
    assert runtime.rehearsal_precision("cpu", cpu_bf16=True).name == "bf16"
    assert runtime.rehearsal_precision("cpu", cpu_bf16=False).name == "fp32"
    assert runtime.rehearsal_precision("cpu", enabled=False, cpu_bf16=True).name == "fp32"
    assert not runtime.rehearsal_precision("cpu", cpu_bf16=True).needs_grad_scaler
    # A plain CPU run is unchanged: fp32.
    assert runtime.select_precision("cpu").name == "fp32"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak reset needs Linux")
def test_peak_memory_on_the_cpu_can_be_reset_to_what_is_held_now():
    cpu = torch.device("cpu")
    big = torch.ones(512 * 2**20 // 4)  # 512 MiB, touched
    del big
    high = runtime.peak_memory_mb(cpu)
    assert runtime.reset_peak_memory(cpu)
    assert high - runtime.peak_memory_mb(cpu) > 400


def test_peak_memory_on_the_cpu_is_the_process_peak_rss():
    peak = runtime.peak_memory(torch.device("cpu"))
    assert peak["memory_source"] == "process_peak_rss" and peak["peak_allocated_mb"] is None
    assert peak["peak_memory_mb"] == runtime.peak_memory_mb(torch.device("cpu")) > 0


def test_oom_injection_fires_only_above_its_limit(monkeypatch):
    monkeypatch.delenv(runtime.OOM_INJECTION_ENV, raising=False)
    runtime.inject_oom(10**6)  # unset: never
    monkeypatch.setenv(runtime.OOM_INJECTION_ENV, "4")
    runtime.inject_oom(4)
    with pytest.raises(torch.OutOfMemoryError, match="CUDA out of memory.*micro-batch 8 > 4"):
        runtime.inject_oom(8)
    monkeypatch.setenv(runtime.OOM_INJECTION_ENV, "four")
    with pytest.raises(ConfigError, match=runtime.OOM_INJECTION_ENV):
        runtime.inject_oom(8)


def test_threads_from_option_or_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert runtime.configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert runtime.configure_threads(None) == 2
        with pytest.raises(ConfigError):
            runtime.configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_thread_budget_follows_the_grants_orch_writes(tmp_path, monkeypatch):
    grant = tmp_path / "orch-threads"
    monkeypatch.setenv(THREADS_FILE_ENV, str(grant))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        budget = runtime.ThreadBudget(check_every_s=0.0)
        assert budget.poll() is None  # no grant written yet
        grant.write_text("2\n")
        assert budget.poll() == 2 and torch.get_num_threads() == 2
        assert budget.poll() is None  # the same grant is applied once
        grant.write_text("not a number\n")
        assert budget.poll() is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_thread_budget_does_nothing_for_a_run_started_by_hand(monkeypatch):
    monkeypatch.delenv(THREADS_FILE_ENV, raising=False)
    assert runtime.ThreadBudget(check_every_s=0.0).poll() is None


def test_step_budget_warms_up_decays_and_stops_at_either_cap():
    budget = runtime.StepBudget(max_steps=10, time_limit_s=1e9, lr=1.0, warmup_steps=2,
                                final_lr_ratio=0.1)
    assert budget.learning_rate(0, 0.0) == 0.5 and budget.learning_rate(1, 0.0) == 1.0
    assert budget.learning_rate(10, 0.0) == pytest.approx(0.1)
    # The clock counts as much as the steps: half the time gone is half the cosine.
    assert budget.learning_rate(2, 5e8) == pytest.approx(0.55)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    steps = [tick.step for tick in runtime.budget_steps(budget, optimizer, print)]
    assert steps == list(range(10))
    assert optimizer.param_groups[0]["lr"] == budget.learning_rate(9, 0.0)  # set per step
    timed = runtime.StepBudget(max_steps=10**6, time_limit_s=0.0, lr=1.0, warmup_steps=1,
                               final_lr_ratio=0.1)
    assert list(runtime.budget_steps(timed, optimizer, print)) == []


def test_eval_mode_restores_the_mode_a_module_had_even_on_error():
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(2))
    with runtime.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"), runtime.eval_mode(model):
        raise RuntimeError("boom")
    assert all(m.training for m in model.modules())
    model.eval()
    with runtime.eval_mode(model):
        pass
    assert not any(m.training for m in model.modules())  # an eval model stays in eval
