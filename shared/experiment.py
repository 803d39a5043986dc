"""What a variant plugs into the shared training loop and evaluation: an ``Experiment``.

A variant describes its model and data here (what is trainable, how a batch becomes a loss,
how the future is predicted from the context); ``shared.training`` trains it and
``shared.evaluation`` scores it, the same way for every variant.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from orchestrator.client import Run
from shared.data.clips import LoaderSettings
from shared.runtime import FP32, Precision


class Experiment(abc.ABC):
    """What a variant plugs into the loop.

    ``trainable`` holds every module that is trained (it alone is checkpointed and given to
    the optimizer); frozen parts live elsewhere on the experiment and are counted by
    ``parameter_counts``.
    """

    trainable: nn.Module
    # How ``train_batches`` makes batches of videos: set by the loop from the training config
    # (DataLoader workers) and the device (pinned memory on CUDA).
    loader: LoaderSettings = LoaderSettings()
    # The precision of passes without gradients (frozen encodes, evaluation): set by the loop
    # from the training config's ``eval_precision``.
    inference: Precision = FP32

    @abc.abstractmethod
    def frozen_modules(self) -> list[nn.Module]:
        """Modules that must never be updated (tokenizer, motion backbone...)."""

    def to(self, device: torch.device) -> None:
        self.trainable.to(device)
        for module in self.frozen_modules():
            module.to(device)

    @property
    def device(self) -> torch.device:
        """Where the trainable parameters are (the CPU if there are none)."""
        for parameter in self.trainable.parameters():
            return parameter.device
        return torch.device("cpu")

    def prepare(self, log: Run, *, rehearse: bool = False) -> None:  # noqa: B027
        """One-off work before training, e.g. filling a latent cache (an optional hook).
        ``rehearse``: a rehearsal, which may skip what only repeats its later passes."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups; override to give parts of ``trainable`` their own learning rate
        (a ``lr_scale`` key multiplies the configured rate)."""
        return [{"params": [p for p in self.trainable.parameters() if p.requires_grad]}]

    def alternative_rows(self) -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
        """Rows scored beside the model at the end: the same model predicting another way
        (name -> (context (B, 3, Tc, H, W), future frames) -> prediction), so a trade-off the
        preset settled is on the page (e.g. the sign readout: sharper, lower PSNR)."""
        return {}

    def epoch_metrics(self) -> dict[str, float]:
        """Extra held-out measurements recorded with each epoch (e.g. a trainable
        tokenizer's own reconstruction quality)."""
        return {}

    @abc.abstractmethod
    def train_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[dict[str, Any]]:
        """Batches of the training clips in ``order`` (a permutation of clip indices)."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of a batch and a few floats to log."""

    @abc.abstractmethod
    def predict(self, context_bcthw: torch.Tensor, future_frames: int) -> torch.Tensor:
        """Predicted future frames (B, 3, future_frames, H, W) in [-1, 1] from the context alone."""

    @abc.abstractmethod
    def oracle(self, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor) -> torch.Tensor:
        """The true future through the tokenizer: the best a latent predictor can reach."""

    def parameter_counts(self) -> dict[str, int]:
        return parameter_counts(self.trainable, self.frozen_modules())


def parameter_counts(trainable: nn.Module, frozen: Iterable[nn.Module] = ()) -> dict[str, int]:
    """{"trainable": parameters of ``trainable`` that take gradients, "frozen": those of
    ``trainable`` and ``frozen`` that do not}; a parameter shared by modules counts once."""
    trainable_count = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    frozen_ids: set[int] = set()
    frozen_count = 0
    for module in [trainable, *frozen]:
        for parameter in module.parameters():
            if not parameter.requires_grad and id(parameter) not in frozen_ids:
                frozen_ids.add(id(parameter))
                frozen_count += parameter.numel()
    return {"trainable": trainable_count, "frozen": frozen_count}


def index_batches(order: torch.Tensor, batch_size: int) -> Iterator[list[int]]:
    """The clip indices of each training batch: ``order`` cut into runs of ``batch_size``."""
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size].tolist()
