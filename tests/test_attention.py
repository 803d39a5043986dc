import itertools
import sys
import types

import pytest
import torch

from shared import attention as attn_mod
from shared.attention import (
    ENV_VAR,
    attention,
    flash_attn_available,
    naive_attention,
    select_attention_backend,
)
from shared.errors import ConfigError

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ALL_COMBOS = list(itertools.product(("cpu", "cuda", "mps"), DTYPES, (False, True)))


@pytest.mark.parametrize("device_type, dtype, flash", ALL_COMBOS)
def test_auto_selection_uses_flash_only_for_half_precision_on_cuda(device_type, dtype, flash):
    chosen = select_attention_backend(device_type, dtype, flash)
    wants_flash = flash and device_type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    assert chosen == ("flash_attn" if wants_flash else "sdpa")
    for auto in ("", "auto"):
        assert select_attention_backend(device_type, dtype, flash, requested=auto) == chosen


@pytest.mark.parametrize("device_type, dtype, flash", ALL_COMBOS)
def test_override_forces_a_kernel_or_says_why_it_cannot(device_type, dtype, flash):
    for forced in ("sdpa", "naive"):
        assert select_attention_backend(device_type, dtype, flash, requested=forced) == forced
    can_flash = flash and device_type == "cuda" and dtype != torch.float32
    if can_flash:
        assert select_attention_backend(device_type, dtype, flash, requested="flash_attn") == (
            "flash_attn"
        )
    else:
        with pytest.raises(ConfigError, match=f"{ENV_VAR}=flash_attn cannot run") as info:
            select_attention_backend(device_type, dtype, flash, requested="flash_attn")
        assert ("not installed" in str(info.value)) == (not flash)
    with pytest.raises(ConfigError, match="use one of auto, sdpa, flash_attn, naive"):
        select_attention_backend(device_type, dtype, flash, requested="xformers")


def test_flash_availability_is_detected_lazily(monkeypatch):
    attn_mod._flash_attn_func.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # None in sys.modules = import fails
    assert not flash_attn_available()

    attn_mod._flash_attn_func.cache_clear()
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_func = lambda *args, **kwargs: None  # only the selection logic uses it
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    assert flash_attn_available()
    attn_mod._flash_attn_func.cache_clear()


def _qkv(n_q=37, n_k=37, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, n_q, 16, generator=gen, dtype=dtype)
    k = torch.randn(2, 3, n_k, 16, generator=gen, dtype=dtype)
    v = torch.randn(2, 3, n_k, 16, generator=gen, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_naive_reference(causal, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    q, k, v = _qkv()
    out = attention(q, k, v, causal=causal)
    ref = naive_attention(q, k, v, causal=causal)
    assert out.shape == (2, 3, 37, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_naive_causal_mask_hides_later_keys():
    q, k, v = _qkv(n_q=12, n_k=12)
    out = naive_attention(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 6:] += 5.0
    v2[:, :, 6:] -= 3.0
    out2 = naive_attention(q, k2, v2, causal=True)
    torch.testing.assert_close(out[:, :, :6], out2[:, :, :6])
    assert not torch.allclose(out[:, :, 6:], out2[:, :, 6:])


def test_env_override_routes_to_naive_and_rejects_flash_on_cpu(monkeypatch):
    q, k, v = _qkv(n_q=8, n_k=8)
    monkeypatch.setenv(ENV_VAR, "naive")
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v), atol=0, rtol=0)
    monkeypatch.setenv(ENV_VAR, "flash_attn")
    with pytest.raises(ConfigError, match="flash_attn cannot run"):
        attention(q, k, v)
