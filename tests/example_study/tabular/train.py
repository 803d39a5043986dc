"""The train entry point both variants share: orch's contract through its client.

    python -m variants.<name>.train --preset small --output DIR [--seed N] [--threads T] ...
"""

from __future__ import annotations

import argparse

from orchestrator.client import Run
from tabular.data import NOISE, make_split
from tabular.model import Features, log_loss, probability, step

EPOCHS, STEPS, LR = 5, 40, 1.0


def accuracy(weights: list[float], rows: list[tuple[list[float], int]]) -> float:
    return sum((probability(weights, f) > 0.5) == bool(label) for f, label in rows) / len(rows)


def main(variant: str, features: Features, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--output", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int)  # orch passes these; this study needs neither
    parser.add_argument("--device")
    args = parser.parse_args(argv)
    train = [(features(x, y), label) for x, y, label in make_split("train", 400, args.seed)]
    points = make_split("test", 400)
    test = [(features(x, y), label) for x, y, label in points]
    with Run(args.output) as run:
        run.start(variant=variant, preset=args.preset, seed=args.seed, epochs=EPOCHS,
                  steps_per_epoch=STEPS, total_steps=EPOCHS * STEPS)
        weights = [0.0] * len(train[0][0])
        history = []
        for epoch in range(1, EPOCHS + 1):
            for _ in range(STEPS):
                weights = step(weights, train, LR)
            loss = log_loss(weights, train)
            run.progress(epoch=epoch, step=epoch * STEPS, loss=loss, total_steps=EPOCHS * STEPS)
            scores = {"accuracy": accuracy(weights, test), "log_loss": log_loss(weights, test)}
            run.eval(epoch=epoch, metrics=scores)
            history.append({"epoch": epoch, "train_loss": loss, "eval": scores})
        positives = sum(label for _, label in test)
        majority = max(positives, len(test) - positives) / len(test)
        # Accuracy by distance from the centre, in thirds of the unit radius (and beyond).
        rings = [[row for row, (x, y, _) in zip(test, points, strict=True)
                  if min(3, int(3 * (x * x + y * y) ** 0.5)) == ring] for ring in range(4)]
        run.write_results({
            "schema": 2, "variant": variant, "preset": args.preset, "seed": args.seed,
            "status": "success", "config": {"epochs": EPOCHS, "steps": STEPS, "lr": LR},
            "history": history,
            "metrics": {"model": scores, "majority": {"accuracy": majority},
                        "noise_ceiling": {"accuracy": 1 - NOISE}},
            "series": {"accuracy_by_ring": {
                "index": "ring (thirds of the radius)", "metric": "accuracy",
                "rows": {"model": [accuracy(weights, ring) for ring in rings]}}},
        })
        run.end()
