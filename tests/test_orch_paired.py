"""Paired differences (orchestrator.report.paired): a known real difference is found, no
difference is called a tie, the ranks show only what the verdicts support, and every view
says it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from orchestrator.report import build_report, write_report
from orchestrator.report.markdown import paired_rows
from orchestrator.report.paired import Comparison, compare, supported_ranks
from orchestrator.study import MetricSpec, ReferenceSpec, StudySpec

HIGHER = MetricSpec("score", "higher", rank=True, digits=2)
STUDY = StudySpec(metrics=(HIGHER, MetricSpec("error", "lower", digits=2)),
                  references=(ReferenceSpec("baseline_row", "floor", "chance"),))


def clips(n: int = 300, seed: int = 0) -> list[float]:
    """Per-example difficulty: most of the variance is shared by every model (paired)."""
    rng = random.Random(seed)
    return [rng.gauss(20.0, 3.0) for _ in range(n)]


def model(base: list[float], shift: float, noise: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [b + shift + rng.gauss(0.0, noise) for b in base]


def test_a_known_difference_is_found_in_its_direction() -> None:
    base = clips()
    better, worse = [model(base, 0.3, 0.5, 1)], [model(base, 0.0, 0.5, 2)]
    difference, low, high, verdict = compare(better, worse, HIGHER)
    assert verdict == "better" and 0 < low < 0.3 < high
    assert difference == pytest.approx(0.3, abs=0.1)
    assert compare(worse, better, HIGHER)[3] == "worse"
    # For a metric where lower wins, the same numbers mean the opposite.
    assert compare(better, worse, MetricSpec("error", "lower"))[3] == "worse"


def test_no_difference_is_a_tie() -> None:
    base = clips()
    ties = 0
    for seed in range(20):  # 95% intervals: about 1 in 20 null cases may miss
        a, b = [model(base, 0.0, 0.5, 100 + seed)], [model(base, 0.0, 0.5, 200 + seed)]
        ties += compare(a, b, HIGHER)[3] == "tie"
    assert ties >= 17


def test_seeds_widen_the_interval() -> None:
    """Two seeds whose runs differ by a lot: the per-seed spread enters the interval."""
    base = clips()
    steady = compare([model(base, 0.2, 0.3, 1)], [model(base, 0.0, 0.3, 2)], HIGHER)
    spread = compare([model(base, 1.2, 0.3, 1), model(base, -0.8, 0.3, 3)],
                     [model(base, 0.0, 0.3, 2), model(base, 0.0, 0.3, 4)], HIGHER)
    assert steady[3] == "better" and spread[3] == "tie"
    assert spread[2] - spread[1] > 5 * (steady[2] - steady[1])


def test_a_tie_chain_ranks_only_what_the_verdicts_support() -> None:
    """A ties B, B ties C, A beats C: A and B share rank 1, C is 2 (beaten by A alone)."""
    found = [Comparison("a", "b", "score", 0.1, -0.1, 0.3, "tie", 100, (1, 1)),
             Comparison("b", "c", "score", 0.1, -0.1, 0.3, "tie", 100, (1, 1)),
             Comparison("a", "c", "score", 0.2, 0.05, 0.35, "better", 100, (1, 1)),
             Comparison("c", "floor:chance", "score", 5.0, 4.0, 6.0, "better", 100, (1, 1))]
    assert supported_ranks(["a", "b", "c"], found, HIGHER) == {
        "a": (1, True), "b": (1, True), "c": (2, False)}
    # Three clear steps: 1, 2, 3, no ties.
    steps = [Comparison("a", "b", "score", 1, 0.5, 1.5, "better", 100, (1, 1)),
             Comparison("a", "c", "score", 2, 1.5, 2.5, "better", 100, (1, 1)),
             Comparison("b", "c", "score", 1, 0.5, 1.5, "better", 100, (1, 1))]
    assert supported_ranks(["c", "b", "a"], steps, HIGHER) == {
        "a": (1, False), "b": (2, False), "c": (3, False)}


def write_run(folder: Path, shifts: dict[str, float]) -> Path:
    base = clips(200)
    for i, (variant, shift) in enumerate(shifts.items()):
        out = folder / variant
        out.mkdir(parents=True)
        score = model(base, shift, 0.5, 20 + i)
        chance = [b - 5 for b in base]
        doc = {"schema": 2, "variant": variant, "preset": "p", "seed": 0, "status": "success",
               "metrics": {"model": {"score": sum(score) / len(score), "error": 1.0},
                           "baseline_row": {"score": sum(chance) / len(chance), "error": 2.0}},
               "per_example": {"model": {"score": score, "error": [1.0] * len(score)},
                               "baseline_row": {"score": chance,
                                                "error": [2.0] * len(score)}}}
        (out / "results.json").write_text(json.dumps(doc))
    return folder


def test_the_report_shows_the_verdicts_in_every_view(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"same1": 0.0, "same2": 0.0, "ahead": 1.0})
    report = build_report(run, STUDY)
    ranks = {s.variant: (s.rank, s.tied) for s in report.variants}
    assert ranks == {"ahead": (1, False), "same1": (2, True), "same2": (2, True)}
    rows = paired_rows(report)
    pair = next(r for r in rows if {r[0], r[1]} == {"same1", "same2"} and r[2] == "score")
    assert pair[5] == "no detectable difference"
    assert any(r[0] == "ahead" and r[1] == "chance (floor)" and r[5] == "A better"
               for r in rows)
    written = write_report(report, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Paired differences" in md and "| =2 | **same1** |" in md
    assert "no detectable difference" in (tmp_path / "out" / "report.html").read_text()
    assert written.markdown_path is not None
