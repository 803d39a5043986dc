"""The linear variant's gate: what must hold before it trains."""

from tabular.data import make_split
from tabular.model import linear, log_loss, probability, step


def rows():
    return [(linear(x, y), label) for x, y, label in make_split("train", 64)]


def test_the_loss_falls_on_a_fixed_batch():
    batch = rows()
    weights = [0.0] * len(batch[0][0])
    before = log_loss(weights, batch)
    for _ in range(20):
        weights = step(weights, batch, 1.0)
    assert log_loss(weights, batch) < before


def test_probabilities_are_probabilities():
    assert all(0.0 < probability([5.0] * len(f), f) < 1.0 for f, _ in rows())
