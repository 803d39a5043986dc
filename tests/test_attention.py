import itertools
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from shared import attention as attn_mod
from shared.attention import (
    ENV_VAR,
    AttentionChoice,
    attention,
    flash_attn_available,
    flash_attn_unfit,
    naive_attention,
    select_attention_backend,
)
from shared.errors import ConfigError

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ALL_COMBOS = list(itertools.product(("cpu", "cuda", "mps"), DTYPES, (False, True)))
AMPERE, TURING = (8, 0), (7, 5)


@pytest.fixture(autouse=True)
def fresh_reports(monkeypatch):
    """Every test starts with no fallback reported yet."""
    monkeypatch.setattr(attn_mod, "_reported", set())


@pytest.mark.parametrize("device_type, dtype, flash", ALL_COMBOS)
def test_auto_selection_uses_flash_only_for_half_precision_on_cuda(device_type, dtype, flash):
    chosen = select_attention_backend(device_type, dtype, flash, head_dim=32, capability=AMPERE)
    wants_flash = flash and device_type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    assert chosen == AttentionChoice("flash_attn" if wants_flash else "sdpa")
    assert chosen.fallback is None  # choosing by itself never reports anything
    for auto in ("", "auto"):
        assert select_attention_backend(device_type, dtype, flash, head_dim=32,
                                        capability=AMPERE, requested=auto) == chosen


@pytest.mark.parametrize("device_type, dtype, flash", ALL_COMBOS)
def test_forced_kernels_and_flash_falls_back_to_sdpa_saying_why(device_type, dtype, flash):
    for forced in ("sdpa", "naive"):
        assert select_attention_backend(device_type, dtype, flash, head_dim=32,
                                        requested=forced) == AttentionChoice(forced)
    chosen = select_attention_backend(device_type, dtype, flash, head_dim=32, capability=AMPERE,
                                      requested="flash_attn")
    if flash and device_type == "cuda" and dtype != torch.float32:
        assert chosen == AttentionChoice("flash_attn")
    else:
        assert chosen.backend == "sdpa"
        # The first constraint that fails is the reason given.
        expected = ("not installed" if not flash else
                    "CUDA only" if device_type != "cuda" else "float32, and flash-attn takes")
        assert expected in chosen.fallback
    with pytest.raises(ConfigError, match="use one of auto, sdpa, flash_attn, naive"):
        select_attention_backend(device_type, dtype, flash, head_dim=32, requested="xformers")


@pytest.mark.parametrize("head_dim, fits", [(8, True), (32, True), (256, True), (12, False),
                                            (264, False), (512, False)])
def test_flash_needs_a_supported_head_dim_and_an_ampere_gpu(head_dim, fits):
    chosen = select_attention_backend("cuda", torch.bfloat16, True, head_dim=head_dim,
                                      capability=AMPERE, requested="flash_attn")
    assert chosen.backend == ("flash_attn" if fits else "sdpa")
    assert fits or f"head dim is {head_dim}" in chosen.fallback
    auto = select_attention_backend("cuda", torch.bfloat16, True, head_dim=head_dim,
                                    capability=AMPERE)
    assert auto == AttentionChoice("flash_attn" if fits else "sdpa")
    old_gpu = select_attention_backend("cuda", torch.bfloat16, True, head_dim=32,
                                       capability=TURING, requested="flash_attn")
    assert old_gpu.backend == "sdpa" and "compute capability 7.5" in old_gpu.fallback
    assert flash_attn_unfit("cuda", torch.float16, 64, True, (9, 0)) is None


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


def test_env_override_routes_to_naive(monkeypatch):
    q, k, v = _qkv(n_q=8, n_k=8)
    monkeypatch.setenv(ENV_VAR, "naive")
    torch.testing.assert_close(attention(q, k, v), naive_attention(q, k, v), atol=0, rtol=0)
    monkeypatch.setenv(ENV_VAR, "xformers")
    with pytest.raises(ConfigError, match="is not a kernel"):
        attention(q, k, v)


def test_requested_flash_runs_sdpa_where_it_cannot_and_says_why_once(monkeypatch):
    # The evaluation case: fp32 tensors outside autocast (here also CPU, without the package).
    attn_mod._flash_attn_func.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    monkeypatch.setenv(ENV_VAR, "flash_attn")
    q, k, v = _qkv(n_q=8, n_k=8)
    with pytest.warns(RuntimeWarning, match="using SDPA .* not installed") as caught:
        out = attention(q, k, v)
        attention(q, k, v, causal=True)
    assert len(caught) == 1  # once per reason, not per call
    monkeypatch.delenv(ENV_VAR)
    torch.testing.assert_close(out, attention(q, k, v), atol=0, rtol=0)

    # With the package present, the same CPU call gives the next reason, once too.
    attn_mod._flash_attn_func.cache_clear()
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_func = lambda *args, **kwargs: pytest.fail("flash-attn ran on the CPU")
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    monkeypatch.setenv(ENV_VAR, "flash_attn")
    with pytest.warns(RuntimeWarning, match="on cpu, and flash-attn runs on CUDA only"):
        attention(q, k, v)
    attn_mod._flash_attn_func.cache_clear()


def test_flash_path_hands_over_sequence_major_tensors_and_returns_head_major(monkeypatch):
    # No GPU here: route the call to a fake flash_attn_func that checks flash-attn's layout
    # (B, N, heads, head_dim) and computes with SDPA.
    seen = []

    def fake_flash(q, k, v, *, dropout_p, causal):
        seen.append((tuple(q.shape), dropout_p, causal))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    monkeypatch.setattr(attn_mod, "_flash_attn_func", lambda: fake_flash)
    monkeypatch.setattr(attn_mod, "select_attention_backend",
                        lambda *args, **kwargs: AttentionChoice("flash_attn"))
    q, k, v = _qkv(n_q=12, n_k=12)
    for causal in (False, True):
        out = attention(q, k, v, causal=causal)
        torch.testing.assert_close(out, naive_attention(q, k, v, causal=causal),
                                   atol=1e-5, rtol=1e-4)
    assert seen == [((2, 12, 3, 16), 0.0, False), ((2, 12, 3, 16), 0.0, True)]
