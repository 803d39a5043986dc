"""Scaled dot-product attention with a run-time choice of kernel.

Design choices:

- One entry point, ``attention(q, k, v)``, on (B, heads, N, head_dim) tensors, so model code
  never cares which kernel runs.
- The default kernel is ``torch.nn.functional.scaled_dot_product_attention`` (SDPA): on CPU
  and GPU it picks a fused kernel that never materialises the N x N score matrix, which is
  what lets the predictor attend over 25,600 latent tokens at all.
- flash-attn's ``flash_attn_func`` is used when the package is importable and the tensors are
  fp16/bf16 on CUDA, the only case it supports. It is an optional extra (``orch[cuda]``), so
  it is imported lazily, and only when a CUDA half-precision call makes it relevant.
- The choice is a small pure function, ``select_attention_backend``, so every combination is
  tested on a CPU-only machine. ``ORCH_ATTENTION=sdpa|flash_attn|naive`` forces a kernel
  (``auto`` or unset: choose); forcing one that cannot run is a ConfigError, never a silent
  fallback, because a benchmark that silently ran another kernel would lie.
- ``naive_attention`` materialises softmax(QK^T / sqrt(d)) V. It is the reference for tests
  and the baseline of ``benchmarks/attention.py``; its memory grows as heads * N^2.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from shared.errors import ConfigError

Backend = Literal["sdpa", "flash_attn", "naive"]
BACKENDS: tuple[Backend, ...] = ("sdpa", "flash_attn", "naive")
ENV_VAR = "ORCH_ATTENTION"
FLASH_DTYPES = (torch.float16, torch.bfloat16)


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


def select_attention_backend(
    device_type: str,
    dtype: torch.dtype,
    flash_available: bool,
    *,
    requested: str | None = None,
) -> Backend:
    """The kernel for tensors of ``dtype`` on ``device_type``.

    ``requested`` is the user's override (``ORCH_ATTENTION``); None, "" or "auto" lets the
    function choose: flash-attn where it can run, SDPA everywhere else.
    """
    flash_fits = flash_available and device_type == "cuda" and dtype in FLASH_DTYPES
    if requested in (None, "", "auto"):
        return "flash_attn" if flash_fits else "sdpa"
    if requested not in BACKENDS:
        raise ConfigError(
            f"{ENV_VAR}={requested!r} is not a kernel: use one of auto, {', '.join(BACKENDS)}"
        )
    if requested == "flash_attn" and not flash_fits:
        if not flash_available:
            why = "the flash-attn package is not installed (pip install 'orch[cuda]')"
        else:
            why = f"it needs fp16/bf16 tensors on CUDA, got {dtype} on {device_type}"
        raise ConfigError(f"{ENV_VAR}=flash_attn cannot run: {why}; or unset {ENV_VAR}")
    return requested  # type: ignore[return-value]


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
    # Only a CUDA half-precision call can use flash-attn, so only then is the import tried.
    could_flash = q.device.type == "cuda" and q.dtype in FLASH_DTYPES
    backend = select_attention_backend(
        q.device.type,
        q.dtype,
        could_flash and flash_attn_available(),
        requested=os.environ.get(ENV_VAR),
    )
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
