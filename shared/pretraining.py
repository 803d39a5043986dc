"""What the two pretraining scripts share: ``shared.magvit.pretrain`` (the tokenizer) and
``shared.motion.pretrain`` (the motion backbones) take the same run options, train for a
``shared.runtime.StepBudget``, step their optimizer the same way and report their progress
in an ``events.jsonl`` (``PretrainRun``), as a training does."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from orchestrator.client import Run
from shared.runtime import StepBudget

if TYPE_CHECKING:  # typeshed's name for "any dataclass instance", which exists for checkers only
    from _typeshed import DataclassInstance

# A pretraining config: a dataclass with ``time_limit_s`` and ``max_steps`` fields.
ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


class StepBudgetFields:
    """Mixin for a pretraining config dataclass that holds the fields of a ``StepBudget``
    (the mixin adds no field of its own): ``budget`` gathers them."""

    max_steps: int
    time_limit_s: float
    lr: float
    warmup_steps: int
    final_lr_ratio: float

    @property
    def budget(self) -> StepBudget:
        return StepBudget(max_steps=self.max_steps, time_limit_s=self.time_limit_s, lr=self.lr,
                          warmup_steps=self.warmup_steps, final_lr_ratio=self.final_lr_ratio)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--seed, --threads, and --time-limit / --max-steps to override the preset's budget."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=None, help="override, seconds")
    parser.add_argument("--max-steps", type=int, default=None, help="override")


def with_budget_options(config: ConfigT, args: argparse.Namespace) -> ConfigT:
    """``config`` with the budget overrides given on the command line (``add_run_options``)."""
    if args.time_limit is not None:
        config = replace(config, time_limit_s=args.time_limit)
    if args.max_steps is not None:
        config = replace(config, max_steps=args.max_steps)
    return config


def clipped_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                 parameters: Iterable[torch.Tensor], max_norm: float) -> None:
    """One optimizer step on ``loss`` with the gradient norm of ``parameters`` clipped."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimizer.step()


class PretrainRun(Run):
    """A pretraining's ``DIR/events.jsonl`` (requirements.md 3.1, through orch's client), so
    that orch's live view shows a shared job as it shows a training: its steps as one epoch
    against the budget, the loss, the held-out figures at the end, an error if it fails."""

    def __init__(self, output_dir: str | os.PathLike[str], budget: StepBudget) -> None:
        super().__init__(output_dir)
        self.budget = budget

    def budget_progress(self, *, step: int, seconds: float, loss: float, **fields: Any
                        ) -> dict[str, Any]:
        """Progress after ``step`` steps in ``seconds`` of training. Where the clock will end
        the run before the step cap, ``total_steps`` is the step it will end at, at the pace
        so far; ``eta_s`` is what is left of the budget (the evaluation comes after)."""
        done = self.budget.progress(step, seconds)
        total, eta = self.budget.max_steps, None
        if done > 0:
            total = min(total, max(step, round(step / done)))
            eta = seconds * (1 - done) / done
        return self.progress(epoch=1, step=step, loss=loss, total_steps=total, eta_s=eta,
                             **fields)
