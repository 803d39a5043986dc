"""The GPU acceptance check runs to the end on a CPU (micro), says what it skipped, and turns
a rehearsal's figures into FLOP/s against a GPU's peak."""

from __future__ import annotations

import json

import pytest

from scripts import gpu_acceptance


def test_on_the_cpu_it_rehearses_every_variant_and_lists_what_it_skipped(tmp_path, capsys):
    assert gpu_acceptance.main(["--output", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "acceptance.json").read_text())
    assert figures["preset"] == "micro" and figures["device"] == "cpu"
    rows = figures["rows"]
    assert [(r["variant"], r["attention"]) for r in rows] == [
        ("baseline", "sdpa"), ("joint-i3d", "sdpa"), ("slowfast-frozen", "sdpa")]
    for row in rows:
        assert len(row["reserved_mb"]) == 2 and all(m > 0 for m in row["reserved_mb"])
        assert row["allocated_mb"] == [None, None]  # no CUDA allocator on the CPU
        assert row["tflops"] > 0 and row["peak_share"] is None
    skipped = " ".join(figures["skipped"])
    assert "no GPU visible" in skipped and "flash-attn" in skipped and "full shapes" in skipped
    out = capsys.readouterr().out
    assert "micro rehearsal" in out and "skipped:" in out


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0), ("Tesla T4", None)])
def test_the_peak_is_found_by_the_gpus_name(name, peak):
    assert gpu_acceptance._known_peak(name) == peak


def test_flops_per_second_come_from_the_two_clip_step():
    rehearsal = {"precision": "bf16", "points": [
        {"micro_batch": 1, "peak_memory_mb": 1024.0, "peak_allocated_mb": 900.0,
         "step_seconds": 2.0, "flops": 1e12},  # warm-up in it: not used
        {"micro_batch": 2, "peak_memory_mb": 2048.0, "peak_allocated_mb": 1800.0,
         "step_seconds": 0.01, "flops": 2e12}]}
    row = gpu_acceptance._row("baseline", "sdpa", rehearsal, peak_tflops=400.0)
    assert row.tflops == pytest.approx(200.0) and row.peak_share == pytest.approx(0.5)
    assert row.reserved_mb == [1024.0, 2048.0] and row.allocated_mb == [900.0, 1800.0]
