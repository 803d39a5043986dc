"""The baseline gate's builder and own checks. The gate (test_gate.py) runs each check on the
real variant; tests/test_gate_checks.py runs it on a broken model and sees it fail."""

from __future__ import annotations

from pathlib import Path

import torch

from branches.baseline.config import BaselineConfig, baseline_config
from branches.baseline.model import build_experiment
from shared.latent_experiment import FrozenTokenizerExperiment
from shared.testing import (
    check_parameter_counts,
    check_training_steps,
    expected_predictor_parameters,
    gate_inputs,
    micro_tokenizer,
)


def micro_experiment(directory: Path, config: BaselineConfig | None = None
                     ) -> FrozenTokenizerExperiment:
    """The baseline built as its entry point builds it, from a micro tokenizer checkpoint
    written to ``directory``, without a latent cache."""
    config = config or baseline_config("micro")
    tokenizer, train_set = gate_inputs(config.study, directory)
    return build_experiment(config, tokenizer=tokenizer, train_set=train_set,
                            train_clips=config.study.train.train_clips, cache=None)


def check_parameter_counts_match_config(experiment: FrozenTokenizerExperiment,
                                        config: BaselineConfig) -> None:
    """The predictor's parameters train and number what ``config`` says; the tokenizer's are
    frozen and number those of the micro tokenizer."""
    expected = {"trainable": expected_predictor_parameters(config.study.predictor),
                "frozen": sum(p.numel() for p in micro_tokenizer().parameters())}
    check_parameter_counts(experiment, expected, frozen={"tokenizer": experiment.tokenizer},
                           trainable={"predictor": experiment.predictor})


def check_training(experiment: FrozenTokenizerExperiment) -> None:
    """25 Adam steps on one batch of 8 clips: ``check_training_steps`` with the tokenizer
    frozen."""
    batch = next(experiment.train_batches(torch.arange(8), 8))
    optimizer = torch.optim.Adam(experiment.trainable.parameters(), lr=3e-3)
    check_training_steps(experiment, batch, optimizer, steps=25,
                         frozen={"tokenizer": experiment.tokenizer})
