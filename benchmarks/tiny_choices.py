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

    python -m benchmarks.tiny_choices --tokenizer PATH --confirm --seeds 0,1 \
        --epochs 3 --batch 32 --readout samples:4

confirms a choice before a preset adopts it: the preset as it is and the choice, each trained
on every seed, compared clip by clip on validation with the report's paired bootstrap (over
clips and seeds), one change at a time and together. The held-out split is scored too, for
the record, never to choose.
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
from orchestrator.report.paired import compare  # noqa: E402
from orchestrator.study import MetricSpec  # noqa: E402
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


def train_once(study: StudyConfig, tokenizer: str, out: Path, threads: int,
               seed: int = 0) -> dict[str, Any]:
    """One baseline run at ``study``; its results record (validation history, held-out
    metrics) and wall time."""
    config = replace(baseline_config(study.name), study=study)
    args = TrainArgs(preset=study.name, output=out, resume=False, seed=seed, data=None,
                     tokenizer=tokenizer, motion=None, threads=threads, device="cpu")
    started = time.perf_counter()
    results = run_variant(args, variant=VARIANT, study=study,
                          build=partial(build_experiment, config),
                          variant_config=asdict(config), cache_key={})
    return results | {"seconds": time.perf_counter() - started}


def readout_scores(study: StudyConfig, tokenizer: str, checkpoint: Path,
                   split: str) -> dict[str, float]:
    """PSNR on ``split`` of a trained run's model with each readout."""
    per_clip = readout_per_clip(study, tokenizer, checkpoint, split, READOUTS)
    return {name: sum(values) / len(values) for name, values in per_clip.items()}


def readout_per_clip(study: StudyConfig, tokenizer: str, checkpoint: Path, split: str,
                     readouts: tuple[tuple[str, int], ...]) -> dict[str, list[float]]:
    """Per-clip PSNR on ``split`` (clips in one order) of a trained run's model with each
    of ``readouts``."""
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
    for mode, count in readouts:
        experiment.predictor.config = replace(base, readout=mode, readout_samples=count)
        torch.manual_seed(0)  # the drawn readouts' draws: the same for every model scored
        row = evaluator.evaluate_model(experiment)
        scores[_readout_name(mode, count)] = [float(v) for v in row["per_clip"]["psnr"]]
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


def confirm(preset: StudyConfig, tokenizer: str, work: Path, threads: int, seeds: list[int],
            *, epochs: int, batch: int, readout: tuple[str, int]) -> dict[str, Any]:
    """The preset against the choice (epochs, batch, readout): validation PSNR per clip on
    every seed, and paired 95% intervals for each change alone and both together."""
    before_readout = (preset.predictor.readout, preset.predictor.readout_samples)
    readouts = tuple(dict.fromkeys((before_readout, readout)))
    before_run = (preset.train.epochs, preset.train.batch_size)
    runs = tuple(dict.fromkeys((before_run, (epochs, batch))))
    # split -> (epochs, batch, readout name) -> per seed: per-clip PSNR
    per_clip: dict[str, dict[tuple[int, int, str], list[list[float]]]] = {
        "validation": {}, "held_out": {}}
    seconds: dict[tuple[int, int], list[float]] = {}
    for seed in seeds:
        for e, b in runs:
            study = with_choices(preset, epochs=e, batch=b)
            out = work / f"e{e}-b{b}-s{seed}"
            record = train_once(study, tokenizer, out, threads, seed=seed)
            seconds.setdefault((e, b), []).append(record["seconds"])
            for split in per_clip:
                scores = readout_per_clip(study, tokenizer, out / "checkpoints" / "last.pt",
                                          split, readouts)
                for name, values in scores.items():
                    per_clip[split].setdefault((e, b, name), []).append(values)
            print(f"  seed {seed} epochs {e} batch {b}: {record['seconds']:.0f} s", flush=True)
    psnr = MetricSpec(name="psnr", better="higher")
    before = (*before_run, _readout_name(*before_readout))
    after = (epochs, batch, _readout_name(*readout))
    steps = {"training (epochs, batch)": ((epochs, batch, before[2]), before),
             "readout": (after, (epochs, batch, before[2])),
             "both": (after, before)}
    summary: dict[str, Any] = {"seeds": seeds, "before": before, "after": after,
                               "train_seconds": {f"e{e}-b{b}": sum(v) / len(v)
                                                 for (e, b), v in seconds.items()}}
    for split, rows in per_clip.items():
        for label, (x, y) in steps.items():
            if x == y:
                continue
            difference, low, high, verdict = compare(rows[x], rows[y], psnr)
            summary[f"{split}: {label}"] = {"difference": difference, "low": low,
                                            "high": high, "verdict": verdict}
            mean_x = sum(map(sum, rows[x])) / sum(map(len, rows[x]))
            print(f"  {split} {label}: {x} {mean_x:.3f} dB, {difference:+.3f} dB "
                  f"[{low:+.3f}, {high:+.3f}] against {y}: {verdict}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="the preset's pretrained tokenizer")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, help="folder for the runs (default: a temp dir)")
    p.add_argument("--confirm", action="store_true",
                   help="confirm --epochs/--batch/--readout against the preset over --seeds")
    p.add_argument("--seeds", default="0,1", help="seeds for --confirm, comma-separated")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--readout", default=None, help="sign, mean or samples:N")
    args = p.parse_args(argv)
    preset = baseline_config(args.preset).study
    work = args.output or Path(tempfile.mkdtemp(prefix="choices-"))
    if args.confirm:
        mode, _, count = (args.readout or preset.predictor.readout).partition(":")
        summary = confirm(preset, args.tokenizer, work, args.threads,
                          [int(s) for s in args.seeds.split(",")],
                          epochs=args.epochs or preset.train.epochs,
                          batch=args.batch or preset.train.batch_size,
                          readout=(mode, int(count or 1)))
        print(json.dumps(summary, indent=1, default=str))
        return summary
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
