"""The scheduler benchmark: its sharing model, its exact search, and orch's planner
measured against it."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.scheduler import (
    INVENTORIES,
    Inventory,
    Job,
    best_makespan,
    lower_bound,
    main,
    mix_instances,
    one_per_gpu,
    planner,
)
from orchestrator.devices import Gpu
from orchestrator.plan import JobPlan, Plan


def jobs_of(*specs: tuple[float, float]) -> list[Job]:
    return [Job(f"j{i}", memory_gb, hours) for i, (memory_gb, hours) in enumerate(specs)]


def test_two_jobs_sharing_one_gpu_each_run_at_half_speed() -> None:
    outcome = planner(jobs_of((30, 1.0), (30, 1.0)), Inventory.of(1, 80).gpus)
    assert outcome.ends == {0: pytest.approx(2.0), 1: pytest.approx(2.0)}
    assert outcome.packed == 1


def test_a_job_that_does_not_fit_beside_another_waits() -> None:
    # 50 + 40 GB > 80 GB: the longer starts first, the other when it ends, at full speed.
    outcome = planner(jobs_of((50, 1.0), (40, 2.0)), Inventory.of(1, 80).gpus)
    assert outcome.ends == {1: pytest.approx(2.0), 0: pytest.approx(3.0)}
    assert outcome.packed == 0


def test_a_short_job_sharing_speeds_up_the_other_when_it_ends() -> None:
    # Both at half speed until the 1 h job ends at t=2 (the 3 h one has done 1 h), then the
    # 3 h job alone: 2 h more.
    outcome = planner(jobs_of((30, 1.0), (30, 3.0)), Inventory.of(1, 80).gpus)
    assert outcome.ends == {0: pytest.approx(2.0), 1: pytest.approx(4.0)}


def test_one_per_gpu_never_shares() -> None:
    outcome = one_per_gpu(jobs_of((10, 1.0), (10, 1.0), (10, 1.0)), Inventory.of(2, 24).gpus)
    assert outcome.packed == 0
    assert outcome.makespan == pytest.approx(2.0)


def test_exact_search_finds_the_known_optimum_that_longest_first_misses() -> None:
    # Graham's example: 3,3,2,2,2 on two GPUs. Longest first gives 7; {3,3} | {2,2,2} is 6.
    jobs = jobs_of((10, 3), (10, 3), (10, 2), (10, 2), (10, 2))
    assert best_makespan(jobs, Inventory.of(2, 80).gpus) == pytest.approx(6.0)


def test_exact_search_keeps_a_job_off_gpus_too_small_for_it() -> None:
    mixed = (Gpu(0, 80 * 1024, 80 * 1024), Gpu(1, 24 * 1024, 24 * 1024))
    jobs = jobs_of((60, 2), (60, 2), (10, 1))  # the two big ones only fit the 80 GB GPU
    assert best_makespan(jobs, mixed) == pytest.approx(4.0)


def test_exact_search_gives_up_past_its_budget() -> None:
    jobs = jobs_of(*[(10, 1 + i / 7) for i in range(10)])
    assert best_makespan(jobs, Inventory.of(4, 80).gpus, node_budget=10) is None


def test_the_exact_search_matches_every_queue_order_of_the_planner() -> None:
    # Brute force: one job per GPU over every queue order reaches the optimum, and orch's
    # planner in any order never beats it.
    rng = random.Random(3)
    gpus = Inventory.of(2, 40).gpus
    for _ in range(5):
        jobs = jobs_of(*[(rng.uniform(4, 40), rng.uniform(1, 10)) for _ in range(5)])
        best = best_makespan(jobs, gpus)
        assert best is not None and best >= lower_bound(jobs, gpus) - 1e-9
        orders = list(itertools.permutations(jobs))
        assert min(one_per_gpu(o, gpus).makespan for o in orders) == pytest.approx(best)
        assert min(planner(o, gpus).makespan for o in orders) >= best - 1e-9


@pytest.mark.parametrize("inventory", INVENTORIES, ids=lambda i: i.name)
def test_the_planner_never_beats_the_best(inventory: Inventory) -> None:
    for _, jobs in mix_instances(inventory, mixes=4, seed=1):
        best = best_makespan(jobs, inventory.gpus)
        if best is not None:
            assert planner(jobs, inventory.gpus).makespan >= best - 1e-9


def test_the_benchmark_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    rows = main(["--mixes", "2"])
    out = capsys.readouterr().out
    assert "1/k speed" in out and "worst planner/best" in out
    assert all(r.best is None or r.planner.makespan >= r.best - 1e-9 for r in rows)


def test_with_run_times_the_planner_is_within_ten_percent_of_the_best() -> None:
    """The default instances (the full jobs and 8 mixes on each inventory): longest first,
    each onto the GPU free of work soonest. Without the estimates, queue order and packing
    onto busy GPUs miss the target."""
    rows = main([])
    rated = [r for r in rows if r.ratio is not None]
    assert len(rated) == 40
    assert max(r.ratio or 0.0 for r in rated) <= 1.10
    assert max(r.no_estimates.makespan / (r.best or 1.0) for r in rated) > 1.10


def test_job_sizes_come_from_a_plan(tmp_path: Path) -> None:
    job = JobPlan(variant="baseline", batch_size=16, micro_batch=16, accumulation=1,
                  memory_mb=35.2 * 1024, memory_basis="measured", margin_mb=0.0,
                  fixed_mb=1.9 * 1024, per_clip_mb=2.08 * 1024, flops_per_step=2.13e12)
    plan = Plan(preset="full", measured_on="cpu", memory_source="process_peak_rss",
                inventory=[], jobs=[job])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()), encoding="utf-8")
    rows = main(["--plan", str(path), "--mixes", "0"])
    assert {r.instance for r in rows} == {"full x1 seed", "full x3 seeds"}
    assert all(r.jobs in (1, 3) for r in rows)
    # A plan with the run's shape: its run time (steps and evaluations) is the job's length.
    timed = Plan(preset="full", measured_on="cpu", memory_source="process_peak_rss",
                 inventory=[], jobs=[replace(job, steps_per_epoch=625, epochs=50,
                                             evaluation_flops=3.6e17)])
    path.write_text(json.dumps(timed.to_dict()), encoding="utf-8")
    rows = main(["--plan", str(path), "--mixes", "0"])
    hours = 2.13e12 * 625 * 50 / 100e12 / 3600 + 1.0
    assert rows[0].best == pytest.approx(hours)
