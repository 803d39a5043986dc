"""Logistic regression by full-batch gradient descent, over the features a variant chooses."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Features = Callable[[float, float], list[float]]


def linear(x: float, y: float) -> list[float]:
    return [1.0, x, y]


def quadratic(x: float, y: float) -> list[float]:
    return [1.0, x, y, x * x, y * y, x * y]


def probability(weights: Sequence[float], features: Sequence[float]) -> float:
    z = sum(w * f for w, f in zip(weights, features, strict=True))
    return 1 / (1 + math.exp(-max(-30.0, min(30.0, z))))


def log_loss(weights: Sequence[float], rows: Sequence[tuple[list[float], int]]) -> float:
    eps = 1e-9
    return -sum(math.log(max(eps, p if label else 1 - p))
                for features, label in rows
                for p in [probability(weights, features)]) / len(rows)


def step(weights: list[float], rows: Sequence[tuple[list[float], int]], lr: float
         ) -> list[float]:
    """One gradient step on the mean log loss."""
    grad = [0.0] * len(weights)
    for features, label in rows:
        error = probability(weights, features) - label
        for i, f in enumerate(features):
            grad[i] += error * f / len(rows)
    return [w - lr * g for w, g in zip(weights, grad, strict=True)]
