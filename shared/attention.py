"""Scaled dot-product attention with a run-time choice of kernel.

Design choices:

- One entry point, ``attention(q, k, v)``, on (B, heads, N, head_dim) tensors, so model code
  never cares which kernel runs.
- The default kernel is ``torch.nn.functional.scaled_dot_product_attention`` (SDPA): on CPU
  and GPU it picks a fused kernel that never materialises the N x N score matrix, which is
  what lets the predictor attend over 25,600 latent tokens at all.
- flash-attn's ``flash_attn_func`` runs where its constraints hold: the package importable,
  CUDA tensors on an Ampere or newer GPU (flash-attn 2), fp16/bf16, a head dim that is a
  multiple of 8 up to 256. It is an optional extra (``orch[cuda]``), imported lazily, and
  only when a call could use it.
- The choice is a small pure function, ``select_attention_backend``, so every combination is
  tested on a CPU-only machine. ``ORCH_ATTENTION=sdpa|flash_attn|naive`` forces a kernel
  (``auto`` or unset: flash-attn where it fits, SDPA elsewhere). ``flash_attn`` is a
  preference, not a guarantee: the same run trains under autocast (bf16, flash-attn fits) and
  evaluates in fp32 outside it (it does not), so a call it cannot serve runs on SDPA, and the
  reason is said once per reason on stderr (a RuntimeWarning), never silently. An unknown
  kernel name is a ConfigError.
- ``naive_attention`` materialises softmax(QK^T / sqrt(d)) V. It is the reference for tests
  and the baseline of ``benchmarks/attention.py``; its memory grows as heads * N^2.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from shared.errors import ConfigError

Backend = Literal["sdpa", "flash_attn", "naive"]
BACKENDS: tuple[Backend, ...] = ("sdpa", "flash_attn", "naive")
ENV_VAR = "ORCH_ATTENTION"
FLASH_DTYPES = (torch.float16, torch.bfloat16)
FLASH_MAX_HEAD_DIM = 256
FLASH_MIN_CAPABILITY = (8, 0)  # flash-attn 2: Ampere (sm80) or newer


@functools.cache
def _flash_attn_func() -> Callable[..., torch.Tensor] | None:
    # Cached because a failed import is not cached by Python and would rescan sys.path on
    # every attention call; tests that fake the package call ``_flash_attn_func.cache_clear()``.
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func  # type: ignore[no-any-return]


def flash_attn_available() -> bool:
    """True if ``flash_attn.flash_attn_func`` can be imported (checked once, on first call)."""
    return _flash_attn_func() is not None


@functools.cache
def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


class AttentionChoice(NamedTuple):
    backend: Backend
    fallback: str | None = None  # why a requested flash-attn runs on SDPA instead


def flash_attn_unfit(
    device_type: str,
    dtype: torch.dtype,
    head_dim: int,
    flash_available: bool,
    capability: tuple[int, int] | None = None,
) -> str | None:
    """Why flash-attn cannot run on these tensors (one clause), or None if it can.
    ``capability`` is the CUDA device's compute capability (None: not checked)."""
    if not flash_available:
        return "the flash-attn package is not installed (pip install 'orch[cuda]')"
    if device_type != "cuda":
        return f"the tensors are on {device_type}, and flash-attn runs on CUDA only"
    if capability is not None and capability < FLASH_MIN_CAPABILITY:
        major, minor = capability
        return f"the GPU has compute capability {major}.{minor}; flash-attn 2 needs 8.0 or newer"
    if dtype not in FLASH_DTYPES:
        return (f"the tensors are {str(dtype).removeprefix('torch.')}, and flash-attn takes "
                "fp16/bf16 only (evaluation runs outside autocast, in fp32)")
    if head_dim % 8 or not 0 < head_dim <= FLASH_MAX_HEAD_DIM:
        return (f"the head dim is {head_dim}; flash-attn takes multiples of 8 up to "
                f"{FLASH_MAX_HEAD_DIM}")
    return None


def select_attention_backend(
    device_type: str,
    dtype: torch.dtype,
    flash_available: bool,
    *,
    head_dim: int,
    capability: tuple[int, int] | None = None,
    requested: str | None = None,
) -> AttentionChoice:
    """The kernel for (B, heads, N, ``head_dim``) tensors of ``dtype`` on ``device_type``.

    ``requested`` is the user's override (``ORCH_ATTENTION``); None, "" or "auto" lets the
    function choose: flash-attn where it can run, SDPA everywhere else. "flash_attn" where it
    cannot run gives SDPA with the reason in ``fallback``.
    """
    if requested not in (None, "", "auto", *BACKENDS):
        raise ConfigError(
            f"{ENV_VAR}={requested!r} is not a kernel: use one of auto, {', '.join(BACKENDS)}"
        )
    unfit = flash_attn_unfit(device_type, dtype, head_dim, flash_available, capability)
    if requested in (None, "", "auto"):
        return AttentionChoice("sdpa" if unfit else "flash_attn")
    if requested == "flash_attn" and unfit:
        return AttentionChoice("sdpa", fallback=unfit)
    return AttentionChoice(requested)  # type: ignore[arg-type]


_reported: set[str] = set()
# The kernels this process has run (provenance: what a result was computed with).
_used: set[str] = set()


def kernels_used() -> list[str]:
    """The attention kernels run since the last ``forget_kernels_used``, sorted."""
    return sorted(_used)


def forget_kernels_used() -> None:
    """Start recording afresh (a run's provenance names the kernels that run used)."""
    _used.clear()


def _report_fallback(reason: str) -> None:
    """Say once per reason why the requested flash-attn is not used."""
    if reason not in _reported:
        _reported.add(reason)
        warnings.warn(f"{ENV_VAR}=flash_attn: using SDPA for these calls because {reason}",
                      RuntimeWarning, stacklevel=3)


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v with the (B, heads, Nq, Nk) scores materialised."""
    scores_bhqk = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        n_q, n_k = scores_bhqk.shape[-2:]
        # Top-left aligned like SDPA's is_causal: query i sees keys 0..i.
        future = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).triu(1)
        scores_bhqk = scores_bhqk.masked_fill(future, float("-inf"))
    # Softmax in fp32 so half-precision inputs do not overflow in exp.
    probs_bhqk = scores_bhqk.float().softmax(dim=-1).to(q.dtype)
    if dropout_p > 0.0:
        probs_bhqk = F.dropout(probs_bhqk, p=dropout_p)
    return probs_bhqk @ v


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Attention over (B, heads, N, head_dim) tensors -> (B, heads, Nq, head_dim).

    ``dropout_p`` is applied to the attention weights; pass 0.0 at evaluation time.
    """
    assert q.dim() == k.dim() == v.dim() == 4, "attention wants (B, heads, N, head_dim)"
    requested = os.environ.get(ENV_VAR)
    cuda = q.device.type == "cuda"
    # The import is tried only when flash-attn could serve the call or is asked for by name.
    could_flash = requested == "flash_attn" or (cuda and q.dtype in FLASH_DTYPES)
    backend, fallback = select_attention_backend(
        q.device.type,
        q.dtype,
        could_flash and flash_attn_available(),
        head_dim=q.shape[-1],
        capability=_capability(q.device) if cuda else None,
        requested=requested,
    )
    if fallback is not None:
        _report_fallback(fallback)
    _used.add(backend)
    if backend == "naive":
        return naive_attention(q, k, v, causal=causal, dropout_p=dropout_p)
    if backend == "flash_attn":
        # flash-attn aligns a causal mask bottom-right, SDPA top-left; they agree only when
        # queries and keys have the same length, which is all this project uses.
        assert not causal or q.shape[-2] == k.shape[-2], "causal flash-attn needs Nq == Nk"
        flash_attn_func = _flash_attn_func()
        assert flash_attn_func is not None
        out_bnhd = flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            dropout_p=dropout_p, causal=causal,
        )
        return out_bnhd.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
