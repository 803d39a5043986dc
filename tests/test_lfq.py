"""Lookup-free quantization: index formula, exact inverse, straight-through, factorised entropy."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from shared.magvit import LFQ, codes_to_indices, indices_to_codes
from shared.magvit.lfq import bit_correlation_loss


def test_index_is_the_sum_of_powers_of_two_of_positive_channels_lsb_first() -> None:
    torch.manual_seed(0)
    z = torch.randn(500, 18)
    expected = torch.zeros(500, dtype=torch.int64)
    for d in range(18):
        expected += (z[:, d] > 0).long() * 2**d
    assert torch.equal(codes_to_indices(z, dim=-1), expected)
    one_hot = -torch.ones(18, 18) + 2 * torch.eye(18)  # row d: only channel d positive
    assert codes_to_indices(one_hot, dim=-1).tolist() == [2**d for d in range(18)]
    assert codes_to_indices(torch.ones(1, 18), dim=-1).item() == 2**18 - 1


def test_codes_and_indices_are_exact_inverses() -> None:
    every_index = torch.arange(2**10)
    codes = indices_to_codes(every_index, 10, dim=-1)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(codes_to_indices(codes, dim=-1), every_index)
    # (B, d, T, H, W) layout with the channel axis at dim 1, and the 2^18 extremes
    generator = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 2**18, (2, 3, 4, 5), generator=generator)
    indices[0, 0, 0, :2] = torch.tensor([0, 2**18 - 1])
    codes = indices_to_codes(indices, 18)
    assert codes.shape == (2, 18, 3, 4, 5)
    assert torch.equal(codes_to_indices(codes), indices)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a mixed-precision caller
        assert torch.equal(codes_to_indices(codes), indices)


def test_exact_zero_quantizes_to_minus_one() -> None:
    lfq = LFQ(dim=4).eval()
    z = torch.tensor([[0.0, -0.0, 1e-30, -1e-30]])
    codes, indices = lfq.quantize(z)
    assert codes.tolist() == [[-1.0, -1.0, 1.0, -1.0]]
    assert indices.tolist() == [4]


def test_straight_through_value_is_exact_and_gradient_is_identity() -> None:
    lfq = LFQ(dim=6).train()
    z = torch.tensor([[1e8, -1e8, 0.3, -0.3, 1e-7, -2.5]], requires_grad=True)
    out = lfq(z)
    assert out.codes.tolist() == [[1.0, -1.0, 1.0, -1.0, 1.0, -1.0]]  # no rounding from z
    weights = torch.arange(1.0, 7.0)
    (out.codes * weights).sum().backward()
    assert torch.equal(z.grad, weights[None])


def brute_force_entropies(z: torch.Tensor, temperature: float) -> tuple[float, float]:
    """The official definition: softmax over all 2^d codes of 2 <z, c> / temperature."""
    dim = z.shape[1]
    codebook = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)), dtype=torch.float64)
    probs = torch.softmax(2 * z.double() @ codebook.T / temperature, dim=-1)  # (N, 2^d)
    per_sample = -(probs * probs.clamp_min(1e-300).log()).sum(-1).mean()
    average = probs.mean(0)
    codebook_entropy = -(average * average.clamp_min(1e-300).log()).sum()
    return float(per_sample), float(codebook_entropy)


@pytest.mark.parametrize("temperature", [0.01, 0.5, 2.0])
def test_per_sample_entropy_equals_the_full_softmax_entropy(temperature: float) -> None:
    torch.manual_seed(0)
    z = torch.randn(64, 4) * 0.05 * temperature  # logits of order 1: not saturated
    per_sample, codebook = LFQ(dim=4, temperature=temperature).entropy_terms(z)
    exact_per_sample, exact_codebook = brute_force_entropies(z, temperature)
    assert per_sample.item() == pytest.approx(exact_per_sample, rel=1e-4, abs=1e-6)
    # factorised codebook entropy: sum of per-bit entropies of the averaged bit probabilities,
    # an upper bound of the exact entropy of the averaged distribution, at most d ln 2
    assert exact_codebook - 1e-5 <= codebook.item() <= 4 * math.log(2) + 1e-6
    single = z[:1]  # one sample: the averaged distribution is still a product, so they agree
    _, codebook_one = LFQ(dim=4, temperature=temperature).entropy_terms(single)
    exact_one = brute_force_entropies(single, temperature)[1]
    assert codebook_one.item() == pytest.approx(exact_one, rel=1e-4, abs=1e-5)


def test_losses_in_training_mode_and_zeros_in_eval_mode() -> None:
    torch.manual_seed(0)
    z = (torch.randn(2, 18, 2, 3, 3) * 50).requires_grad_()  # saturated logits stay finite
    lfq = LFQ(dim=18).train()
    out = lfq(z)
    sign = torch.where(z > 0, 1.0, -1.0)
    torch.testing.assert_close(out.commitment_loss, ((z - sign) ** 2).mean())
    torch.testing.assert_close(out.entropy_loss, out.per_sample_entropy - out.codebook_entropy)
    terms = (out.entropy_loss, out.per_sample_entropy, out.codebook_entropy)
    assert all(torch.isfinite(v) for v in terms)
    assert 0 <= out.codebook_entropy.item() <= 18 * math.log(2)
    out.entropy_loss.backward()
    assert torch.isfinite(z.grad).all()
    assert out.indices.shape == (2, 2, 3, 3)
    lfq.eval()
    out_eval = lfq(z)
    assert out_eval.entropy_loss.item() == out_eval.commitment_loss.item() == 0.0
    assert torch.equal(out_eval.indices, out.indices)


def test_entropy_loss_pushes_towards_confident_and_diverse_codes() -> None:
    torch.manual_seed(0)
    lfq = LFQ(dim=8, temperature=1.0).train()
    z = (torch.randn(256, 8) * 0.3).requires_grad_()
    start = lfq(z).entropy_loss.item()
    optimizer = torch.optim.Adam([z], lr=0.1)  # the loss is a mean: tiny raw gradients
    for _ in range(50):
        optimizer.zero_grad()
        lfq(z).entropy_loss.backward()
        optimizer.step()
    out = lfq(z)
    assert out.entropy_loss.item() < start - 1.0
    assert out.per_sample_entropy.item() < 0.5  # confident bits
    assert out.codebook_entropy.item() > 8 * math.log(2) - 0.5  # balanced bits


def test_bit_correlation_loss_sees_bits_that_copy_each_other() -> None:
    # The factorised codebook entropy is at its maximum for balanced bits even when they all
    # copy one another; the correlation loss is what tells those two cases apart.
    torch.manual_seed(0)
    independent = torch.randn(2, 18, 3, 16, 16)
    copies = independent[:, :1].expand(-1, 18, -1, -1, -1).clone()
    lfq = LFQ(dim=18).train()
    for z in (independent, copies):  # both: every bit balanced, so the same factorised bound
        mean_bits = (z > 0).float().movedim(1, -1).reshape(-1, 18).mean(0)
        assert torch.all((mean_bits - 0.5).abs() < 0.05)
    assert float(lfq(independent).codebook_entropy) == pytest.approx(
        float(lfq(copies).codebook_entropy), rel=1e-2)
    assert float(bit_correlation_loss(independent)) < 0.01
    assert float(bit_correlation_loss(copies)) == pytest.approx(1.0, abs=1e-3)
    anti = torch.cat([copies[:, :9], -copies[:, 9:]], dim=1)  # anti-correlated copies count too
    assert float(bit_correlation_loss(anti)) == pytest.approx(1.0, abs=1e-3)

    z = independent.clone().requires_grad_(True)
    mixed = z + 0.5 * z[:, :1]  # every channel leans on channel 0
    bit_correlation_loss(mixed).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
