"""Points in [-1, 1]^2, labelled 1 inside the circle of radius 0.7, with a share of the labels
flipped: deterministic for a seed, so every variant sees the same rows."""

from __future__ import annotations

import random

RADIUS = 0.7
NOISE = 0.1  # share of flipped labels: the best any model can reach is 1 - NOISE


def make_split(split: str, rows: int, seed: int = 0) -> list[tuple[float, float, int]]:
    rng = random.Random(f"{split}-{seed}")
    out = []
    for _ in range(rows):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        label = int(x * x + y * y < RADIUS * RADIUS)
        out.append((x, y, 1 - label if rng.random() < NOISE else label))
    return out
