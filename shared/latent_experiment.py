"""Future prediction over the latents of a frozen tokenizer (optionally with frozen features).

How a clip of T = 1 + 4k frames is used, with C = 1 + 4j context frames:

- context latents: the context frames encoded ON THEIR OWN, (B, 18, Tc', H', W') with
  Tc' = 1 + j. GroupNorm pools over the whole clip, so encoding the full clip would let the
  future leak into the context latents.
- target latents: the full clip encoded, its last Tf' = T' - Tc' latent frames: the causal
  encoder's latent frame t' covers video frames 4t'-3 .. 4t', so these stand for exactly the
  T - C future frames.
- decoding: context latents and predicted latents are decoded together (the decoder is
  causal and its first latent frame stands for one frame only); the future is the last
  T - C frames of the result.

Because the tokenizer (and a motion backbone, if any) is frozen, these latents and features
are the same every epoch: with a ``ClipCache`` they are computed once, stored on disk and
shared by reruns and worktrees; without one they are computed for every batch. Latents and
features have caches of their own: the latents depend on the tokenizer and the data only, so
every variant over the same frozen tokenizer reuses the same entries whatever its features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from orchestrator.client import Run
from shared.data import video_batches
from shared.experiment import Experiment, index_batches
from shared.latent_cache import ClipCache
from shared.magvit import MagvitTokenizer
from shared.magvit.lfq import codes_to_indices, indices_to_codes
from shared.metrics import Predictor
from shared.predictor import LatentPredictor, latent_loss
from shared.presets import StudyConfig
from shared.runtime import eval_mode


class ConditionSource(Protocol):
    """A frozen network that turns the context frames into conditioning tokens."""

    module: nn.Module
    cache_key: dict[str, Any]

    @property
    def feature_dim(self) -> int:
        """D_cond, the width of each conditioning token."""
        ...

    def __call__(self, context_bcthw: torch.Tensor) -> torch.Tensor:
        """(B, 3, Tc, H, W) in [-1, 1] -> (B, N_cond, D_cond)."""
        ...


@dataclass(frozen=True)
class LatentLayout:
    """Frame and latent counts of a clip split into context and future."""

    frames: int
    context_frames: int

    def __post_init__(self) -> None:
        assert (self.frames - 1) % 4 == 0 and (self.context_frames - 1) % 4 == 0
        assert 0 < self.context_frames < self.frames

    @property
    def future_frames(self) -> int:
        return self.frames - self.context_frames

    @property
    def context_latent_frames(self) -> int:
        return 1 + (self.context_frames - 1) // 4


def encode_context(tokenizer: MagvitTokenizer, context_bcthw: torch.Tensor) -> torch.Tensor:
    """Context frames alone -> codes (B, 18, Tc', H', W')."""
    return tokenizer.encode(context_bcthw)[0]


def encode_future_target(
    tokenizer: MagvitTokenizer, video_bcthw: torch.Tensor, layout: LatentLayout
) -> torch.Tensor:
    """Whole clip -> the codes of its future part (B, 18, Tf', H', W')."""
    return tokenizer.encode(video_bcthw)[0][:, :, layout.context_latent_frames :]


def decode_future(
    tokenizer: MagvitTokenizer,
    context_codes: torch.Tensor,
    future_codes: torch.Tensor,
    future_frames: int,
) -> torch.Tensor:
    """Decode context and future codes together; the last ``future_frames`` frames, in [-1, 1]."""
    frames = tokenizer.decode(torch.cat([context_codes, future_codes.to(context_codes.dtype)], 2))
    # fp32 whatever the autocast: draws are averaged and frames scored in it.
    return frames[:, :, -future_frames:].float().clamp(-1, 1)


def predict_future(
    tokenizer: MagvitTokenizer,
    predictor: LatentPredictor,
    context_bcthw: torch.Tensor,
    future_frames: int,
    condition: torch.Tensor | None = None,
    readout: str | None = None,
) -> torch.Tensor:
    """The prediction (B, 3, future_frames, H, W) from the context frames alone: their codes,
    the predictor's logits over the future latent grid, its ``readout`` (one or more code
    draws), each decoded together with the context codes, the decoded frames averaged."""
    context_codes = encode_context(tokenizer, context_bcthw)
    grid = (future_frames // 4, *context_codes.shape[3:])  # a later latent frame: 4 frames
    logits = predictor(context_codes, grid, condition).float()
    draws_sbcthw = predictor.readout(logits, readout)
    # One draw at a time: memory stays that of a single prediction whatever the draw count.
    total = decode_future(tokenizer, context_codes, draws_sbcthw[0], future_frames)
    for codes in draws_sbcthw[1:]:
        total = total + decode_future(tokenizer, context_codes, codes, future_frames)
    return total / len(draws_sbcthw)


def oracle_future(
    tokenizer: MagvitTokenizer, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor
) -> torch.Tensor:
    """The tokenizer's round trip of the true future, decoded as a prediction would be."""
    video = torch.cat([context_bcthw, future_bcthw], dim=2)
    layout = LatentLayout(video.shape[2], context_bcthw.shape[2])
    context_codes = encode_context(tokenizer, context_bcthw)
    future_codes = encode_future_target(tokenizer, video, layout)
    return decode_future(tokenizer, context_codes, future_codes, future_bcthw.shape[2])


# The row of the same model decoding its most likely code (shared.evaluation scores it beside
# the model when the preset's readout is another): sharper frames, usually a lower PSNR.
SIGN_READOUT_ROW = "model_sign"


def sign_readout_row(predictor: LatentPredictor,
                     predict: Callable[..., torch.Tensor]) -> dict[str, Predictor]:
    """{SIGN_READOUT_ROW: the prediction with the sign readout} unless that is the readout."""
    if predictor.config.readout == "sign":
        return {}
    return {SIGN_READOUT_ROW: lambda context, frames: predict(context, frames, readout="sign")}


def weights_fingerprint(module: nn.Module) -> str:
    """Content hash of a module's weights and buffers: the cache key of what a frozen
    network computes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FrozenTokenizerExperiment(Experiment):
    """A trainable predictor over the latents of a frozen tokenizer."""

    def __init__(
        self,
        *,
        tokenizer: MagvitTokenizer,
        predictor: LatentPredictor,
        train_set: Dataset[dict[str, Any]],
        train_clips: int,
        layout: LatentLayout,
        cache: ClipCache | None = None,
        condition: ConditionSource | None = None,
        condition_cache: ClipCache | None = None,
        encode_batch_size: int = 16,
    ) -> None:
        """``cache`` holds the latents, ``condition_cache`` the condition's features; either
        may be None (computed for every batch)."""
        self.tokenizer = tokenizer
        self.trainable = predictor
        self.predictor = predictor
        self.train_set = train_set
        self.train_clips = train_clips
        self.layout = layout
        self.cache = cache
        self.condition = condition
        self.condition_cache = condition_cache if condition is not None else None
        self.encode_batch_size = encode_batch_size
        self._cached: dict[str, torch.Tensor] = {}  # stacked cache entries, filled by prepare

    def frozen_modules(self) -> list[nn.Module]:
        return [self.tokenizer] + ([self.condition.module] if self.condition else [])

    # -- frozen computations ------------------------------------------------------------

    @torch.no_grad()
    def frozen_latents(self, video_bcthw: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen tokenizer's context and future codes of whole clips (B, 3, T, H, W), in
        the evaluation's precision: the codes the predictor trains on are those it is scored
        on."""
        context = video_bcthw[:, :, : self.layout.context_frames]
        with self.inference.autocast():
            return {
                "context_codes": encode_context(self.tokenizer, context),
                "future_codes": encode_future_target(self.tokenizer, video_bcthw, self.layout),
            }

    @torch.no_grad()
    def frozen_condition(self, video_bcthw: torch.Tensor) -> torch.Tensor:
        """The condition's tokens of the clips' context frames only (evaluation precision)."""
        assert self.condition is not None
        with self.inference.autocast():
            return self.condition(video_bcthw[:, :, : self.layout.context_frames]).float()

    def frozen_targets(self, video_bcthw: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the frozen networks give for a batch of whole clips (B, 3, T, H, W)."""
        out = self.frozen_latents(video_bcthw)
        if self.condition is not None:
            out["condition"] = self.frozen_condition(video_bcthw)
        return out

    def _rendered(self, chunks: list[list[int]]) -> Iterator[torch.Tensor]:
        """The training clips of each chunk (B, 3, T, H, W) on the device, rendered in the
        loader's workers when it has some (a few batches ahead of the encoder)."""
        for videos in video_batches(self.train_set, chunks, self.loader):
            yield videos.to(self.device, non_blocking=True)

    def _latent_entries(self, chunks: list[list[int]]) -> Iterator[list[dict[str, torch.Tensor]]]:
        for videos in self._rendered(chunks):
            latents = self.frozen_latents(videos)
            # Codes are stored as their LFQ indices: 4 bytes per latent position.
            yield [{f"{part}_index": codes_to_indices(latents[f"{part}_codes"][b], dim=0)
                    .int().cpu() for part in ("context", "future")}
                   for b in range(videos.shape[0])]

    def _condition_entries(self, chunks: list[list[int]]
                           ) -> Iterator[list[dict[str, torch.Tensor]]]:
        for videos in self._rendered(chunks):
            condition = self.frozen_condition(videos)
            yield [{"condition": condition[b].cpu()} for b in range(videos.shape[0])]

    def prepare(self, log: Run, *, rehearse: bool = False) -> None:
        indices = list(range(self.train_clips))
        self._cached = {}
        for name, cache, compute in (("latent", self.cache, self._latent_entries),
                                     ("feature", self.condition_cache, self._condition_entries)):
            if cache is None:
                continue
            if self.inference.dtype is not None:  # entries of another precision differ
                cache = cache.keyed(precision=self.inference.name)

            def report(done: int, total: int, name: str = name) -> None:
                print(f"{name} cache: computed {done}/{total} clips", flush=True)

            entries = cache.load_all(indices, compute, batch_size=self.encode_batch_size,
                                     on_batch=report)
            self._cached |= {key: torch.stack([e[key] for e in entries]) for key in entries[0]}
            log.emit("cache", kind=name, hits=cache.hits, misses=cache.misses,
                     path=str(cache.directory))

    # -- training -----------------------------------------------------------------------

    def train_batches(self, order: torch.Tensor, batch_size: int) -> Iterator[dict[str, Any]]:
        cached = self._cached
        code_dim = self.tokenizer.config.code_dim
        chunks = list(index_batches(order, batch_size))
        needs_videos = "context_index" not in cached or (
            "condition" not in cached and self.condition is not None)
        # Rendered (in the loader's workers, if any) only when a cache lacks something.
        rendered = video_batches(self.train_set, chunks, self.loader) if needs_videos else None
        for chunk in chunks:
            batch: dict[str, torch.Tensor] = {}
            videos = (next(rendered).to(self.device, non_blocking=True)
                      if rendered is not None else None)
            if "context_index" in cached:
                for part in ("context", "future"):
                    batch[f"{part}_codes"] = indices_to_codes(cached[f"{part}_index"][chunk],
                                                              code_dim)
            else:
                assert videos is not None
                batch |= self.frozen_latents(videos)
            if "condition" in cached:
                batch["condition"] = cached["condition"][chunk]
            elif self.condition is not None:
                assert videos is not None
                batch["condition"] = self.frozen_condition(videos)
            yield {key: value.to(self.device) for key, value in batch.items()}

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        future = batch["future_codes"]
        logits = self.predictor(batch["context_codes"], tuple(future.shape[2:]),
                                batch.get("condition"))
        result = latent_loss(logits.float(), future, self.predictor.config.loss)
        return result.loss, {"bit_accuracy": float(result.bit_accuracy)}

    # -- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, context_bcthw: torch.Tensor, future_frames: int,
                readout: str | None = None) -> torch.Tensor:
        with eval_mode(self.predictor):
            condition = self.condition(context_bcthw).float() if self.condition else None
            return predict_future(self.tokenizer, self.predictor, context_bcthw,
                                  future_frames, condition, readout)

    def alternative_rows(self) -> dict[str, Predictor]:
        return sign_readout_row(self.predictor, self.predict)

    @torch.no_grad()
    def oracle(self, context_bcthw: torch.Tensor, future_bcthw: torch.Tensor) -> torch.Tensor:
        return oracle_future(self.tokenizer, context_bcthw, future_bcthw)


def frozen_tokenizer_experiment(
    study: StudyConfig,
    *,
    tokenizer: MagvitTokenizer,
    train_set: Dataset[dict[str, Any]],
    train_clips: int,
    cache: ClipCache | None,
    condition: ConditionSource | None = None,
    condition_cache: ClipCache | None = None,
) -> FrozenTokenizerExperiment:
    """The study's predictor, sized for the tokenizer's codes (and the condition's features),
    trained over ``tokenizer`` frozen."""
    tokenizer.requires_grad_(False).eval()
    condition_dim = study.predictor.condition_dim if condition is None else condition.feature_dim
    predictor = LatentPredictor(replace(study.predictor, code_dim=tokenizer.config.code_dim,
                                        condition_dim=condition_dim))
    return FrozenTokenizerExperiment(
        tokenizer=tokenizer,
        predictor=predictor,
        train_set=train_set,
        train_clips=train_clips,
        layout=LatentLayout(study.data.frames, study.data.context_frames),
        cache=cache,
        condition=condition,
        condition_cache=condition_cache,
    )
