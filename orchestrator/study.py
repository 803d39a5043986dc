"""What a study declares about its numbers: its metrics (which way is better, which one
ranks) and its reference rows (floors a model must beat, ceilings shown beside it).

config.yaml says it under ``study:``::

    study:
      metrics:
        - {name: accuracy, better: higher, rank: true, digits: 3}
        - {name: loss, better: lower}
        - {name: calibration, better: target, target: 1.0}
      references:
        - {name: majority_class, role: floor, label: majority class}

The report, its ranking, flags and charts work from this alone; results.json carries the
numbers under the same names (requirements.md 3.2). A config without ``study:`` gets the
video study's declaration when its results are schema 1 (they could only be that study's),
and otherwise the metrics the results hold, unranked, each named as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BETTER = ("higher", "lower", "target")
# floor: a model must beat it (flagged when it does not); ceiling: shown beside the model;
# alternative: the same model predicting another way (e.g. another readout), shown beside it.
ROLES = ("floor", "ceiling", "alternative")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    better: str = "higher"  # higher, lower, or target (closest to ``target``)
    target: float | None = None
    rank: bool = False  # the one metric variants are ranked by
    digits: int = 3  # decimals shown
    label: str = ""  # column and axis title; the name when empty

    @property
    def title(self) -> str:
        return self.label or self.name

    def score(self, value: float) -> float:
        """``value`` as a number where larger is better (NaN stays NaN)."""
        if math.isnan(value):
            return value
        if self.better == "lower":
            return -value
        if self.better == "target":
            return -abs(value - (self.target or 0.0))
        return value

    def worse(self, value: float, than: float) -> bool:
        """Whether ``value`` is worse than ``than`` (False when either is NaN)."""
        return self.score(value) < self.score(than)


@dataclass(frozen=True)
class ReferenceSpec:
    name: str
    role: str = "floor"  # floor: a model must beat it (flagged); ceiling: shown beside it
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class StudySpec:
    metrics: tuple[MetricSpec, ...] = ()
    references: tuple[ReferenceSpec, ...] = ()
    declared: bool = True  # False: inferred from the results, nothing ranks
    notes: tuple[str, ...] = field(default_factory=tuple)  # lines the report prints under

    @property
    def ranking(self) -> MetricSpec | None:
        return next((m for m in self.metrics if m.rank), None)

    def metric(self, name: str) -> MetricSpec:
        return next((m for m in self.metrics if m.name == name), MetricSpec(name))

    def reference(self, name: str) -> ReferenceSpec:
        return next((r for r in self.references if r.name == name), ReferenceSpec(name))


@dataclass(frozen=True)
class StudyDeclaration:
    """config.yaml's ``study:`` as written (lists, as the config reader builds them)."""

    metrics: list[MetricSpec] = field(default_factory=list)
    references: list[ReferenceSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # printed under the report's table

    def spec(self) -> StudySpec:
        return StudySpec(metrics=tuple(self.metrics), references=tuple(self.references),
                         notes=tuple(self.notes))


# The video study's declaration (this repository's config.yaml says the same): OpenSTL's
# conventions, PSNR ranks; black and copy-last are floors, the tokenizer oracle a ceiling.
VIDEO_STUDY = StudySpec(
    metrics=(MetricSpec("psnr", "higher", rank=True, digits=2, label="PSNR"),
             MetricSpec("ssim", "higher", digits=3, label="SSIM"),
             MetricSpec("mse", "lower", digits=1, label="MSE"),
             MetricSpec("mae", "lower", digits=1, label="MAE")),
    references=(ReferenceSpec("black", "floor", "black"),
                ReferenceSpec("copy_last", "floor", "copy-last"),
                ReferenceSpec("oracle", "ceiling", "oracle")),
    notes=("MSE and MAE are per-frame sums on the [0, 1] scale (OpenSTL conventions).",),
)


def inferred_study(rows: Iterable[dict[str, dict[str, float]]]) -> StudySpec:
    """What results alone say: every metric of the model rows and every other row, in the
    order first seen, with no direction known (so nothing ranks or is flagged)."""
    metrics: dict[str, None] = {}
    references: dict[str, None] = {}
    for row in rows:
        metrics.update(dict.fromkeys(row.get("model", {})))
        references.update(dict.fromkeys(name for name in row if name != "model"))
    return StudySpec(metrics=tuple(MetricSpec(name) for name in metrics),
                     references=tuple(ReferenceSpec(name) for name in references),
                     declared=False)


def study_problems(spec: StudySpec) -> Sequence[str]:
    """What is wrong with a declaration, one line each (empty when it is sound)."""
    problems = []
    names = [m.name for m in spec.metrics]
    if len(set(names)) != len(names):
        problems.append("metrics: a name appears twice")
    for m in spec.metrics:
        if m.better not in BETTER:
            problems.append(f"metric {m.name!r}: better must be one of {', '.join(BETTER)}, "
                            f"got {m.better!r}")
        if m.better == "target" and m.target is None:
            problems.append(f"metric {m.name!r}: better: target needs a target value")
        if not 0 <= m.digits <= 12:
            problems.append(f"metric {m.name!r}: digits must be 0-12, got {m.digits}")
    if sum(m.rank for m in spec.metrics) > 1:
        problems.append("metrics: only one may rank (rank: true)")
    for r in spec.references:
        if r.role not in ROLES:
            problems.append(f"reference {r.name!r}: role must be one of {', '.join(ROLES)}, "
                            f"got {r.role!r}")
        if r.name == "model":
            problems.append("reference 'model': the model's own row is not a reference")
    return problems
