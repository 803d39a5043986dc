"""The statistics of the report: a mean and its 95% Student-t interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% Student t quantiles t_{0.975, df}, for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# Beyond 30: anchors interpolated linearly in 1/df (exact to the third decimal).
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return _T975[df - 1]
    for (d0, t0), (d1, t1) in zip(_T975_TAIL, _T975_TAIL[1:], strict=False):
        if df <= d1:
            x0, x1, x = 1 / d0, (0.0 if d1 == math.inf else 1 / d1), 1 / df
            return t0 + (t1 - t0) * (x0 - x) / (x0 - x1)
    return 1.960


@dataclass(frozen=True)
class Interval:
    """Mean of n values and the half width of its 95% interval (None when n < 2)."""

    mean: float
    half_width: float | None
    n: int

    def format(self, digits: int) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        text = f"{self.mean:.{digits}f}"
        if self.half_width is not None and not math.isnan(self.half_width):
            text += f" ± {self.half_width:.{digits}f}"
        return text


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean ± t_{0.975,n-1} * s / sqrt(n), with s the sample standard deviation."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, None, 0)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, None, 1)
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t975(n - 1) * s / math.sqrt(n), n)
