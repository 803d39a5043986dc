"""Re-make a preset's training choices on the validation split, and score them, before and
after, on the held-out split that no choice saw.

    python -m benchmarks.tiny_choices --tokenizer PATH [--preset tiny] [--threads 2]

The baseline variant, one seed each, judged by validation PSNR (the study's ranking metric):

1. epochs in {1, 2, 3}, each its own run (the learning-rate schedule spans the run);
2. batch size in {half, as is, double} at the chosen epochs;
3. readout of the chosen run's model in {sign, mean, samples x1, x2, x4} (a readout changes
   only how a prediction is decoded, so one trained model serves them all).

"before" is the preset as it is; "after" the chosen epochs, batch and readout. Both are then
scored on the held-out split. Prints a table per step and the before/after figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from branches.baseline.config import VARIANT, baseline_config  # noqa: E402
from branches.baseline.model import build_experiment  # noqa: E402
from shared.checkpoint import read_checkpoint  # noqa: E402
from shared.entry import (  # noqa: E402
    TrainArgs,
    build_datasets,
    load_study_tokenizer,
    run_variant,
)
from shared.evaluation import Evaluator  # noqa: E402
from shared.presets import StudyConfig  # noqa: E402

READOUTS = (("sign", 1), ("mean", 1), ("samples", 1), ("samples", 2), ("samples", 4))


def train_once(study: StudyConfig, tokenizer: str, out: Path, threads: int) -> dict[str, Any]:
    """One baseline run at ``study``; its results record (validation history, held-out
    metrics) and wall time."""
    config = replace(baseline_config(study.name), study=study)
    args = TrainArgs(preset=study.name, output=out, resume=False, seed=0, data=None,
                     tokenizer=tokenizer, motion=None, threads=threads, device="cpu")
    started = time.perf_counter()
    results = run_variant(args, variant=VARIANT, study=study,
                          build=partial(build_experiment, config),
                          variant_config=asdict(config), cache_key={})
    return results | {"seconds": time.perf_counter() - started}


def readout_scores(study: StudyConfig, tokenizer: str, checkpoint: Path,
                   split: str) -> dict[str, float]:
    """PSNR on ``split`` of a trained run's model with each readout."""
    config = replace(baseline_config(study.name), study=study)
    splits = build_datasets(study.data, train_clips=study.train.train_clips,
                            eval_clips=study.train.eval_clips,
                            validation_clips=study.train.val_clips, data_file=None)
    experiment = build_experiment(config, tokenizer=load_study_tokenizer(study, tokenizer),
                                  train_set=splits.train, train_clips=splits.train_clips,
                                  cache=None)
    experiment.trainable.load_state_dict(read_checkpoint(checkpoint)["trainable"])
    experiment.to(torch.device("cpu"))
    dataset = splits.validation if split == "validation" else splits.held_out
    evaluator = Evaluator(dataset, context_frames=study.data.context_frames,
                          batch_size=study.train.eval_batch_size)
    scores = {}
    base = experiment.predictor.config
    for mode, count in READOUTS:
        experiment.predictor.config = replace(base, readout=mode, readout_samples=count)
        row = evaluator.evaluate_model(experiment)
        scores[_readout_name(mode, count)] = row["psnr"]
    experiment.predictor.config = base
    return scores


def _readout_name(mode: str, count: int) -> str:
    return f"samples x{count}" if mode == "samples" else mode


def with_choices(study: StudyConfig, *, epochs: int, batch: int,
                 readout: tuple[str, int] | None = None) -> StudyConfig:
    train = replace(study.train, epochs=epochs, batch_size=batch)
    predictor = study.predictor if readout is None else replace(
        study.predictor, readout=readout[0], readout_samples=readout[1])
    return replace(study, train=train, predictor=predictor)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="the preset's pretrained tokenizer")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, help="folder for the runs (default: a temp dir)")
    args = p.parse_args(argv)
    preset = baseline_config(args.preset).study
    work = args.output or Path(tempfile.mkdtemp(prefix="choices-"))
    runs: dict[tuple[int, int], dict[str, Any]] = {}

    def run(epochs: int, batch: int) -> dict[str, Any]:
        if (epochs, batch) not in runs:
            study = with_choices(preset, epochs=epochs, batch=batch)
            runs[epochs, batch] = train_once(study, args.tokenizer,
                                             work / f"e{epochs}-b{batch}", args.threads)
        return runs[epochs, batch]

    def checkpoint(epochs: int, batch: int) -> Path:
        run(epochs, batch)  # trained already, or now
        return work / f"e{epochs}-b{batch}" / "checkpoints" / "last.pt"

    def validation_psnr(record: dict[str, Any]) -> float:
        return float(record["history"][-1]["eval"]["psnr"])

    batch = preset.train.batch_size
    print(f"{args.preset}: epochs and batch by validation PSNR (baseline, seed 0)")
    for epochs in (1, 2, 3):
        r = run(epochs, batch)
        print(f"  epochs {epochs} batch {batch}: validation {validation_psnr(r):.3f} dB "
              f"({r['seconds']:.0f} s)", flush=True)
    epochs = max((1, 2, 3), key=lambda e: validation_psnr(run(e, batch)))
    for size in (batch // 2, batch * 2):
        r = run(epochs, size)
        print(f"  epochs {epochs} batch {size}: validation {validation_psnr(r):.3f} dB "
              f"({r['seconds']:.0f} s)", flush=True)
    batch = max((batch // 2, batch, batch * 2), key=lambda b: validation_psnr(run(epochs, b)))
    chosen = with_choices(preset, epochs=epochs, batch=batch)
    scores = readout_scores(chosen, args.tokenizer, checkpoint(epochs, batch), "validation")
    print(f"  readouts at epochs {epochs} batch {batch}, validation PSNR: "
          + ", ".join(f"{name} {value:.3f}" for name, value in scores.items()))
    best = max(READOUTS, key=lambda r: scores[_readout_name(*r)])

    before_readout = (preset.predictor.readout, preset.predictor.readout_samples)
    before = readout_scores(preset, args.tokenizer, checkpoint(preset.train.epochs,
                                                                preset.train.batch_size),
                            "held_out")[_readout_name(*before_readout)]
    after = readout_scores(chosen, args.tokenizer, checkpoint(epochs, batch),
                           "held_out")[_readout_name(*best)]
    summary = {
        "before": {"epochs": preset.train.epochs, "batch": preset.train.batch_size,
                   "readout": _readout_name(*before_readout), "held_out_psnr": before},
        "after": {"epochs": epochs, "batch": batch, "readout": _readout_name(*best),
                  "held_out_psnr": after},
    }
    print(f"held-out PSNR: before {before:.3f} dB ({json.dumps(summary['before'])}), "
          f"after {after:.3f} dB ({json.dumps(summary['after'])})")
    return summary


if __name__ == "__main__":
    main()
