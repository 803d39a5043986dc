"""Paired differences: is one variant better than another, by how much, and how sure is that?

Every variant is scored on the same held-out examples (results.json ``per_example``), so two
of them can be compared example by example. For a pair (A, B) and a declared metric, the
difference is score(mean of A) - score(mean of B), in the metric's own direction (higher,
lower, or closeness to a target), with a 95% interval from a paired bootstrap: each
replicate draws the examples with replacement (the same draw for A and B) and, when a
variant has several seeds, its seeds with replacement too, each variant's examples then
averaged over the seeds drawn. The verdict: "better" or "worse" when the interval excludes
0, else "tie" (no detectable difference). Only pure Python: orch installs without numpy.

The ranking shows only what the verdicts on the ranking metric support: a variant's rank is
1 + the number of variants that beat it. So in a tie chain (A ties B, B ties C, A beats C)
A and B share rank 1 and C is rank 2: C is beaten by A only, and B, which beats no one, is
not placed above anyone. Ties are marked "=" in the tables.
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.study import MetricSpec, StudySpec

REPLICATES = 1000
SEED = 20240601  # the bootstrap's own seed: a report is the same every time it is built
LEVEL = 0.95

Samples = list[list[float]]  # per seed: one value per held-out example


@dataclass(frozen=True)
class Comparison:
    """A against B on one metric."""

    a: str
    b: str  # a variant, or a floor row's title
    metric: str
    difference: float  # mean of A - mean of B, in the metric's units
    low: float  # the 95% interval of the difference of scores (higher: A better)
    high: float
    verdict: str  # better, worse, tie (A against B)
    examples: int
    seeds: tuple[int, int]  # seeds of A, of B

    @property
    def against_floor(self) -> bool:
        return self.b.startswith("floor:")


def compare(a: Samples, b: Samples, metric: MetricSpec, *, replicates: int = REPLICATES,
            rng: random.Random | None = None) -> tuple[float, float, float, str]:
    """(difference of means, interval low, high, verdict) for A against B; both hold one
    list per seed over the same examples, in the same order."""
    rng = rng or random.Random(SEED)
    n = len(a[0])
    if n == 0 or any(len(run) != n for run in (*a, *b)):
        raise ValueError("paired samples need the same examples, in one order")
    mean_a, mean_b = _grand_mean(a), _grand_mean(b)
    draws = []
    examples = range(n)
    for _ in range(replicates):
        take = operator.itemgetter(*rng.choices(examples, k=n)) if n > 1 else _first
        seeds_a = rng.choices(a, k=len(a)) if len(a) > 1 else a
        seeds_b = rng.choices(b, k=len(b)) if len(b) > 1 else b
        draw_a = sum(sum(take(run)) for run in seeds_a) / (n * len(seeds_a))
        draw_b = sum(sum(take(run)) for run in seeds_b) / (n * len(seeds_b))
        draws.append(metric.score(draw_a) - metric.score(draw_b))
    draws = [d for d in draws if not math.isnan(d)]
    if not draws:
        return mean_a - mean_b, math.nan, math.nan, "tie"
    draws.sort()
    tail = (1 - LEVEL) / 2
    low = draws[int(tail * (len(draws) - 1))]
    high = draws[int(math.ceil((1 - tail) * (len(draws) - 1)))]
    verdict = "better" if low > 0 else "worse" if high < 0 else "tie"
    return mean_a - mean_b, low, high, verdict


def _first(run: list[float]) -> tuple[float]:
    return (run[0],)


def _grand_mean(runs: Samples) -> float:
    return sum(map(sum, runs)) / sum(map(len, runs))


def comparisons(per_variant: dict[str, dict[str, dict[str, Samples]]], study: StudySpec
                ) -> list[Comparison]:
    """Every pair of variants (in the order given) and every variant against every floor
    row, on every declared metric both have. ``per_variant``: variant -> row ("model" or a
    reference) -> metric -> per-seed samples."""
    if not study.declared:
        return []  # no direction known: nothing to call better or worse
    out = []
    names = list(per_variant)
    pairs = [(x, y) for i, x in enumerate(names) for y in names[i + 1:]]
    for metric in study.metrics:
        for x, y in pairs:
            out += _one(x, per_variant[x].get("model"), y, per_variant[y].get("model"), metric)
        for x in names:
            for ref in study.references:
                if ref.role == "floor":
                    out += _one(x, per_variant[x].get("model"), f"floor:{ref.title}",
                                per_variant[x].get(ref.name), metric)
    return out


def _one(a: str, rows_a: dict[str, Samples] | None, b: str, rows_b: dict[str, Samples] | None,
         metric: MetricSpec) -> list[Comparison]:
    if not rows_a or not rows_b or metric.name not in rows_a or metric.name not in rows_b:
        return []
    samples_a, samples_b = rows_a[metric.name], rows_b[metric.name]
    if not samples_a or not samples_b or len({len(s) for s in (*samples_a, *samples_b)}) != 1:
        return []  # not the same examples: no pairing
    # One seeded stream per comparison: a report does not change when a variant is added.
    rng = random.Random(f"{SEED}:{a}:{b}:{metric.name}")
    difference, low, high, verdict = compare(samples_a, samples_b, metric, rng=rng)
    return [Comparison(a, b, metric.name, difference, low, high, verdict, len(samples_a[0]),
                       (len(samples_a), len(samples_b)))]


def supported_ranks(variants: Sequence[str], found: Sequence[Comparison], metric: MetricSpec
                    ) -> dict[str, tuple[int, bool]]:
    """variant -> (rank, tied): rank = 1 + the variants that beat it on ``metric``; tied when
    another variant has the same rank."""
    beaten_by = {v: 0 for v in variants}
    for c in found:
        if c.metric != metric.name or c.against_floor:
            continue
        if c.verdict == "better" and c.b in beaten_by:
            beaten_by[c.b] += 1
        elif c.verdict == "worse" and c.a in beaten_by:
            beaten_by[c.a] += 1
    ranks = {v: 1 + n for v, n in beaten_by.items()}
    counts = {r: list(ranks.values()).count(r) for r in ranks.values()}
    return {v: (r, counts[r] > 1) for v, r in ranks.items()}
