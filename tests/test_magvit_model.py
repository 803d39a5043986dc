"""The Open-MAGVIT2 tokenizer modules: official key layout, shapes, causality, building blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict

import pytest
import torch
from torch import nn

from shared.errors import ConfigError, DataError
from shared.magvit import TOKENIZER_CONFIGS, MagvitConfig, MagvitTokenizer, tokenizer_config
from shared.magvit.model import AdaptiveGroupNorm, CausalConv3d, ResBlock, Upsampler


def micro(seed: int = 0) -> MagvitTokenizer:
    torch.manual_seed(seed)
    return MagvitTokenizer(tokenizer_config("micro")).eval()


def clip(frames: int, size: int = 16, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


# ------------------------------------------------------------------------- official layout


def official_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split() for line in OFFICIAL_KEYS.strip().splitlines()]
    return [(key, tuple(int(n) for n in shape.split(","))) for key, shape in rows]


def test_official_config_has_exactly_the_283_official_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = MagvitTokenizer(tokenizer_config("official"))
    state = model.state_dict()
    expected = official_keys()
    assert len(expected) == 283
    assert list(state) == [key for key, _ in expected]  # same names, same registration order
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(expected)
    assert tuple(state["decoder.up.3.upsample.conv1.conv_1.weight"].shape) == (4096, 512, 3, 3, 3)
    assert "encoder.conv_in.conv_1.bias" not in state  # the official conv_in has no bias
    assert sum(p.numel() for p in model.encoder.parameters()) == 144_865_298
    assert sum(p.numel() for p in model.decoder.parameters()) == 225_682_051
    assert list(model.quantize.state_dict()) == []


def test_presets_keep_the_4x_temporal_factor_and_18_bits() -> None:
    for name in TOKENIZER_CONFIGS:
        config = tokenizer_config(name)
        assert config.temporal_factor == 4 and config.code_dim == 18, name
        assert config.resolution % config.spatial_factor == 0
    assert tokenizer_config("official").spatial_factor == 8
    assert tokenizer_config("tiny").spatial_factor == 2


def test_config_survives_asdict_and_rejects_bad_values() -> None:
    config = tokenizer_config("tiny")
    assert MagvitConfig(**asdict(config)) == config
    with pytest.raises(ConfigError, match="norm_groups"):
        MagvitConfig(base_channels=12, norm_groups=8)
    with pytest.raises(ConfigError, match="time_downsample"):
        MagvitConfig(channel_mult=(1, 2, 2), time_downsample=(True,))
    with pytest.raises(ConfigError, match="official, tiny, micro"):
        tokenizer_config("huge")


# ------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("frames", [1, 5, 9, 17])
def test_encode_decode_shapes(frames: int) -> None:
    model = micro()
    video = clip(frames)
    with torch.no_grad():
        codes, indices = model.encode(video)
        frames_out = model.decode(codes)
    latent_frames = (frames + 3) // 4
    assert codes.shape == (2, 18, latent_frames, 4, 4)
    assert model.latent_grid(frames, 16, 16) == (latent_frames, 4, 4)
    assert indices.shape == (2, latent_frames, 4, 4) and indices.dtype == torch.int64
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(model.indices_to_codes(indices), codes)
    assert frames_out.shape == (2, 3, frames, 16, 16)  # 1 + 4k frames round-trip
    assert model.decoded_frames(latent_frames) == frames


def test_bad_inputs_raise_data_errors() -> None:
    model = micro()
    with pytest.raises(DataError, match="multiples of 4"):
        model.encode(clip(5, size=18))
    with pytest.raises(DataError, match="channel axis"):
        model.encode(torch.zeros(1, 5, 3, 16, 16))
    with pytest.raises(DataError, match="indices_to_codes"):
        model.decode(torch.zeros(1, 4, 4, 4))


def test_training_forward_gives_losses_and_gradients_everywhere() -> None:
    model = micro().train()
    out = model(clip(5))
    assert out.reconstruction.shape == (2, 3, 5, 16, 16)
    assert out.latent.shape == out.codes.shape == (2, 18, 2, 4, 4)
    assert torch.equal(out.codes.detach(), torch.where(out.latent > 0, 1.0, -1.0))
    for value in (out.entropy_loss, out.commitment_loss, out.per_sample_entropy):
        assert value.ndim == 0 and torch.isfinite(value)
    loss = out.reconstruction.abs().mean() + out.entropy_loss + out.commitment_loss
    loss.backward()
    # the straight-through estimator carries the reconstruction gradient into the encoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())



@pytest.fixture()
def block_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every ResBlock forward, recomputations included (module
    hooks do not fire while a checkpoint recomputes, so the method itself is wrapped)."""
    calls: list[int] = []
    forward = ResBlock.forward

    def counted(self: ResBlock, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return forward(self, x)

    monkeypatch.setattr(ResBlock, "forward", counted)
    return calls


def test_activation_checkpointing_keeps_outputs_and_gradients_and_recomputes(
    block_calls: list[int],
) -> None:
    video = clip(9)
    results = []
    for enabled in (False, True):
        model = micro(0).train().set_activation_checkpointing(enabled)
        assert model.checkpoints_activations == enabled
        block_calls.clear()
        out = model(video)
        forward_calls = len(block_calls)
        loss = (out.reconstruction.abs().mean() + out.entropy_loss + out.commitment_loss
                + out.latent.square().mean())
        loss.backward()
        # Each ResBlock runs once forward, and once more in backward only when checkpointed.
        assert len(block_calls) == forward_calls * (2 if enabled else 1)
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((out.reconstruction.detach(), out.latent.detach(), loss.detach(), grads))
    (rec, latent, loss, grads), (rec_ckpt, latent_ckpt, loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(rec_ckpt, rec, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(latent_ckpt, latent, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-6, atol=1e-7)
    assert grads_ckpt.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_activation_checkpointing_is_off_without_grad_or_in_eval(
    block_calls: list[int],
) -> None:
    model = micro(0).set_activation_checkpointing(True)
    video = clip(5)
    for mode, grad in ((True, False), (False, True)):
        block_calls.clear()
        model.train(mode)
        with torch.set_grad_enabled(grad):
            out = model(video)
        if grad:
            out.reconstruction.mean().backward()
        config = model.config
        assert len(block_calls) == 2 * (config.num_levels + 1) * config.num_res_blocks
    assert not micro(0).checkpoints_activations  # off by default
# ------------------------------------------------------------------------- building blocks


def test_causal_conv_pads_only_the_past() -> None:
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, 3)
    x = torch.randn(1, 2, 6, 5, 5)
    y = conv(x)
    assert y.shape == (1, 3, 6, 5, 5)
    x_changed = x.clone()
    x_changed[:, :, 4:] += 1.0
    y_changed = conv(x_changed)
    assert torch.equal(y[:, :, :4], y_changed[:, :, :4])
    assert not torch.allclose(y[:, :, 4:], y_changed[:, :, 4:])
    # frame 0 sees zeros in the two padded frames: only the last temporal slice of the kernel
    kernel_last = conv.conv_1.weight[:, :, 2:]
    expected0 = nn.functional.conv3d(x[:, :, :1], kernel_last, conv.conv_1.bias, padding=(0, 1, 1))
    torch.testing.assert_close(y[:, :, :1], expected0)
    strided = CausalConv3d(2, 2, 3, stride=(2, 2, 2))
    assert strided(torch.randn(1, 2, 9, 8, 8)).shape == (1, 2, 5, 4, 4)  # ceil(T/2)


def test_upsampler_depth_to_space_order_and_frame_dropping() -> None:
    torch.manual_seed(0)
    channels = 3
    up = Upsampler(channels, upsample_time=True)
    x = torch.randn(1, channels, 3, 2, 2)
    out = up(x)
    assert out.shape == (1, channels, 5, 4, 4)  # T' -> 2T' - 1
    conv = up.conv1(x)  # (1, 8C, 3, 2, 2), channels read as (bt, bh, bw, C), C fastest
    full = torch.empty(1, channels, 6, 4, 4)
    for it in range(2):
        for ih in range(2):
            for iw in range(2):
                for c in range(channels):
                    source = ((it * 2 + ih) * 2 + iw) * channels + c
                    full[0, c, it::2, ih::2, iw::2] = conv[0, source]
    torch.testing.assert_close(out, full[:, :, [0, 2, 3, 4, 5]])
    assert up(x[:, :, :1]).shape == (1, channels, 1, 4, 4)  # a single frame stays single
    spatial = Upsampler(channels, upsample_time=False)
    assert spatial(x).shape == (1, channels, 3, 4, 4)


def test_adaptive_group_norm_uses_the_unbiased_std_of_the_codes() -> None:
    torch.manual_seed(0)
    config = tokenizer_config("micro")
    agn = AdaptiveGroupNorm(config, 8)
    x = torch.randn(2, 8, 3, 4, 4)
    zq = torch.randn(2, 18, 2, 3, 3)
    flat = zq.flatten(2)
    n = flat.shape[-1]
    var_unbiased = ((flat - flat.mean(-1, keepdim=True)) ** 2).sum(-1) / (n - 1)
    scale = agn.gamma((var_unbiased + 1e-6).sqrt())[:, :, None, None, None]
    shift = agn.beta(flat.mean(-1))[:, :, None, None, None]
    normed = nn.functional.group_norm(x, config.norm_groups, eps=config.norm_eps)
    torch.testing.assert_close(agn(x, zq), normed * scale + shift)
    assert torch.isfinite(agn(x, zq[:, :, :1, :1, :1])).all()  # one position: no 0/0


# ------------------------------------------------------------------------- causality


@contextlib.contextmanager
def frozen_statistics(model: nn.Module) -> Iterator[None]:
    """Record every clip-pooled statistic on the first forward pass, replay it afterwards.

    GroupNorm pools (mean, var) over the whole clip and the adaptive norm's gamma / beta read
    the whole latent, so these are the only paths by which a frame can see later frames. With
    them frozen, what is left is the conv stack, which must be causal by construction.
    """
    recorded: dict[nn.Module, object] = {}
    handles = []

    def group_norm_hook(module: nn.GroupNorm, inputs: tuple[torch.Tensor], output: torch.Tensor):
        x = inputs[0]
        grouped = x.reshape(x.shape[0], module.num_groups, -1)
        if module not in recorded:
            recorded[module] = (grouped.mean(-1), grouped.var(-1, unbiased=False))
        mean, var = recorded[module]
        y = (grouped - mean[..., None]) / (var[..., None] + module.eps).sqrt()
        y = y.reshape(x.shape)
        if module.affine:
            y = y * module.weight[:, None, None, None] + module.bias[:, None, None, None]
        return y

    def linear_hook(module: nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor):
        return recorded.setdefault(module, output)

    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            handles.append(module.register_forward_hook(group_norm_hook))
        if isinstance(module, AdaptiveGroupNorm):
            handles.append(module.gamma.register_forward_hook(linear_hook))
            handles.append(module.beta.register_forward_hook(linear_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def test_frozen_statistics_replay_the_real_normalisation() -> None:
    model = micro()
    video = clip(9)
    with torch.no_grad(), frozen_statistics(model):
        first = model.decode(model.encode(video)[0])  # records
        second = model.decode(model.encode(video)[0])  # replays
    plain = model.decode(model.encode(video)[0])
    torch.testing.assert_close(first, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("latent_frame", [0, 1])
def test_encoder_is_causal_once_clip_statistics_are_fixed(latent_frame: int) -> None:
    model = micro()
    video = clip(9)
    changed = video.clone()
    changed[:, :, 4 * latent_frame + 1 :] = torch.rand_like(changed[:, :, 4 * latent_frame + 1 :])
    with torch.no_grad(), frozen_statistics(model):
        latent = model.encode_latent(video)
        latent_changed = model.encode_latent(changed)
    keep = slice(0, latent_frame + 1)
    torch.testing.assert_close(latent[:, :, keep], latent_changed[:, :, keep])
    later = slice(latent_frame + 1, None)
    assert not torch.allclose(latent[:, :, later], latent_changed[:, :, later])
    # without frozen statistics the clip-wide GroupNorm lets the future leak in a little
    with torch.no_grad():
        leak = model.encode_latent(video)[:, :, keep] - model.encode_latent(changed)[:, :, keep]
    assert leak.abs().max() > 0


@pytest.mark.parametrize("latent_frame", [0, 1])
def test_decoder_is_causal_once_clip_statistics_are_fixed(latent_frame: int) -> None:
    model = micro()
    with torch.no_grad():
        codes, _ = model.encode(clip(9))
    changed = codes.clone()
    changed[:, :, latent_frame + 1 :] *= -1
    with torch.no_grad(), frozen_statistics(model):
        frames = model.decode(codes)
        frames_changed = model.decode(changed)
    keep = slice(0, 4 * latent_frame + 1)  # decoded frames <= 4 t' come from latents <= t'
    torch.testing.assert_close(frames[:, :, keep], frames_changed[:, :, keep])
    later = slice(4 * latent_frame + 1, None)
    assert not torch.allclose(frames[:, :, later], frames_changed[:, :, later])


# The 283 generator keys of video_128_262144.ckpt in registration order, with shapes.
OFFICIAL_KEYS = """
encoder.conv_in.conv_1.weight 128,3,3,3,3
encoder.down.0.block.0.norm1.weight 128
encoder.down.0.block.0.norm1.bias 128
encoder.down.0.block.0.norm2.weight 128
encoder.down.0.block.0.norm2.bias 128
encoder.down.0.block.0.conv1.conv_1.weight 128,128,3,3,3
encoder.down.0.block.0.conv2.conv_1.weight 128,128,3,3,3
encoder.down.0.block.1.norm1.weight 128
encoder.down.0.block.1.norm1.bias 128
encoder.down.0.block.1.norm2.weight 128
encoder.down.0.block.1.norm2.bias 128
encoder.down.0.block.1.conv1.conv_1.weight 128,128,3,3,3
encoder.down.0.block.1.conv2.conv_1.weight 128,128,3,3,3
encoder.down.0.block.2.norm1.weight 128
encoder.down.0.block.2.norm1.bias 128
encoder.down.0.block.2.norm2.weight 128
encoder.down.0.block.2.norm2.bias 128
encoder.down.0.block.2.conv1.conv_1.weight 128,128,3,3,3
encoder.down.0.block.2.conv2.conv_1.weight 128,128,3,3,3
encoder.down.0.block.3.norm1.weight 128
encoder.down.0.block.3.norm1.bias 128
encoder.down.0.block.3.norm2.weight 128
encoder.down.0.block.3.norm2.bias 128
encoder.down.0.block.3.conv1.conv_1.weight 128,128,3,3,3
encoder.down.0.block.3.conv2.conv_1.weight 128,128,3,3,3
encoder.down.0.downsample.conv_1.weight 128,128,3,3,3
encoder.down.0.downsample.conv_1.bias 128
encoder.down.1.block.0.norm1.weight 128
encoder.down.1.block.0.norm1.bias 128
encoder.down.1.block.0.norm2.weight 256
encoder.down.1.block.0.norm2.bias 256
encoder.down.1.block.0.conv1.conv_1.weight 256,128,3,3,3
encoder.down.1.block.0.conv2.conv_1.weight 256,256,3,3,3
encoder.down.1.block.0.nin_shortcut.conv_1.weight 256,128,1,1,1
encoder.down.1.block.1.norm1.weight 256
encoder.down.1.block.1.norm1.bias 256
encoder.down.1.block.1.norm2.weight 256
encoder.down.1.block.1.norm2.bias 256
encoder.down.1.block.1.conv1.conv_1.weight 256,256,3,3,3
encoder.down.1.block.1.conv2.conv_1.weight 256,256,3,3,3
encoder.down.1.block.2.norm1.weight 256
encoder.down.1.block.2.norm1.bias 256
encoder.down.1.block.2.norm2.weight 256
encoder.down.1.block.2.norm2.bias 256
encoder.down.1.block.2.conv1.conv_1.weight 256,256,3,3,3
encoder.down.1.block.2.conv2.conv_1.weight 256,256,3,3,3
encoder.down.1.block.3.norm1.weight 256
encoder.down.1.block.3.norm1.bias 256
encoder.down.1.block.3.norm2.weight 256
encoder.down.1.block.3.norm2.bias 256
encoder.down.1.block.3.conv1.conv_1.weight 256,256,3,3,3
encoder.down.1.block.3.conv2.conv_1.weight 256,256,3,3,3
encoder.down.1.downsample.conv_1.weight 256,256,3,3,3
encoder.down.1.downsample.conv_1.bias 256
encoder.down.2.block.0.norm1.weight 256
encoder.down.2.block.0.norm1.bias 256
encoder.down.2.block.0.norm2.weight 256
encoder.down.2.block.0.norm2.bias 256
encoder.down.2.block.0.conv1.conv_1.weight 256,256,3,3,3
encoder.down.2.block.0.conv2.conv_1.weight 256,256,3,3,3
encoder.down.2.block.1.norm1.weight 256
encoder.down.2.block.1.norm1.bias 256
encoder.down.2.block.1.norm2.weight 256
encoder.down.2.block.1.norm2.bias 256
encoder.down.2.block.1.conv1.conv_1.weight 256,256,3,3,3
encoder.down.2.block.1.conv2.conv_1.weight 256,256,3,3,3
encoder.down.2.block.2.norm1.weight 256
encoder.down.2.block.2.norm1.bias 256
encoder.down.2.block.2.norm2.weight 256
encoder.down.2.block.2.norm2.bias 256
encoder.down.2.block.2.conv1.conv_1.weight 256,256,3,3,3
encoder.down.2.block.2.conv2.conv_1.weight 256,256,3,3,3
encoder.down.2.block.3.norm1.weight 256
encoder.down.2.block.3.norm1.bias 256
encoder.down.2.block.3.norm2.weight 256
encoder.down.2.block.3.norm2.bias 256
encoder.down.2.block.3.conv1.conv_1.weight 256,256,3,3,3
encoder.down.2.block.3.conv2.conv_1.weight 256,256,3,3,3
encoder.down.2.downsample.conv_1.weight 256,256,3,3,3
encoder.down.2.downsample.conv_1.bias 256
encoder.down.3.block.0.norm1.weight 256
encoder.down.3.block.0.norm1.bias 256
encoder.down.3.block.0.norm2.weight 512
encoder.down.3.block.0.norm2.bias 512
encoder.down.3.block.0.conv1.conv_1.weight 512,256,3,3,3
encoder.down.3.block.0.conv2.conv_1.weight 512,512,3,3,3
encoder.down.3.block.0.nin_shortcut.conv_1.weight 512,256,1,1,1
encoder.down.3.block.1.norm1.weight 512
encoder.down.3.block.1.norm1.bias 512
encoder.down.3.block.1.norm2.weight 512
encoder.down.3.block.1.norm2.bias 512
encoder.down.3.block.1.conv1.conv_1.weight 512,512,3,3,3
encoder.down.3.block.1.conv2.conv_1.weight 512,512,3,3,3
encoder.down.3.block.2.norm1.weight 512
encoder.down.3.block.2.norm1.bias 512
encoder.down.3.block.2.norm2.weight 512
encoder.down.3.block.2.norm2.bias 512
encoder.down.3.block.2.conv1.conv_1.weight 512,512,3,3,3
encoder.down.3.block.2.conv2.conv_1.weight 512,512,3,3,3
encoder.down.3.block.3.norm1.weight 512
encoder.down.3.block.3.norm1.bias 512
encoder.down.3.block.3.norm2.weight 512
encoder.down.3.block.3.norm2.bias 512
encoder.down.3.block.3.conv1.conv_1.weight 512,512,3,3,3
encoder.down.3.block.3.conv2.conv_1.weight 512,512,3,3,3
encoder.mid_block.0.norm1.weight 512
encoder.mid_block.0.norm1.bias 512
encoder.mid_block.0.norm2.weight 512
encoder.mid_block.0.norm2.bias 512
encoder.mid_block.0.conv1.conv_1.weight 512,512,3,3,3
encoder.mid_block.0.conv2.conv_1.weight 512,512,3,3,3
encoder.mid_block.1.norm1.weight 512
encoder.mid_block.1.norm1.bias 512
encoder.mid_block.1.norm2.weight 512
encoder.mid_block.1.norm2.bias 512
encoder.mid_block.1.conv1.conv_1.weight 512,512,3,3,3
encoder.mid_block.1.conv2.conv_1.weight 512,512,3,3,3
encoder.mid_block.2.norm1.weight 512
encoder.mid_block.2.norm1.bias 512
encoder.mid_block.2.norm2.weight 512
encoder.mid_block.2.norm2.bias 512
encoder.mid_block.2.conv1.conv_1.weight 512,512,3,3,3
encoder.mid_block.2.conv2.conv_1.weight 512,512,3,3,3
encoder.mid_block.3.norm1.weight 512
encoder.mid_block.3.norm1.bias 512
encoder.mid_block.3.norm2.weight 512
encoder.mid_block.3.norm2.bias 512
encoder.mid_block.3.conv1.conv_1.weight 512,512,3,3,3
encoder.mid_block.3.conv2.conv_1.weight 512,512,3,3,3
encoder.norm_out.weight 512
encoder.norm_out.bias 512
encoder.conv_out.conv_1.weight 18,512,1,1,1
encoder.conv_out.conv_1.bias 18
decoder.conv_in.conv_1.weight 512,18,3,3,3
decoder.conv_in.conv_1.bias 512
decoder.mid_block.0.norm1.weight 512
decoder.mid_block.0.norm1.bias 512
decoder.mid_block.0.norm2.weight 512
decoder.mid_block.0.norm2.bias 512
decoder.mid_block.0.conv1.conv_1.weight 512,512,3,3,3
decoder.mid_block.0.conv2.conv_1.weight 512,512,3,3,3
decoder.mid_block.1.norm1.weight 512
decoder.mid_block.1.norm1.bias 512
decoder.mid_block.1.norm2.weight 512
decoder.mid_block.1.norm2.bias 512
decoder.mid_block.1.conv1.conv_1.weight 512,512,3,3,3
decoder.mid_block.1.conv2.conv_1.weight 512,512,3,3,3
decoder.mid_block.2.norm1.weight 512
decoder.mid_block.2.norm1.bias 512
decoder.mid_block.2.norm2.weight 512
decoder.mid_block.2.norm2.bias 512
decoder.mid_block.2.conv1.conv_1.weight 512,512,3,3,3
decoder.mid_block.2.conv2.conv_1.weight 512,512,3,3,3
decoder.mid_block.3.norm1.weight 512
decoder.mid_block.3.norm1.bias 512
decoder.mid_block.3.norm2.weight 512
decoder.mid_block.3.norm2.bias 512
decoder.mid_block.3.conv1.conv_1.weight 512,512,3,3,3
decoder.mid_block.3.conv2.conv_1.weight 512,512,3,3,3
decoder.up.0.block.0.norm1.weight 256
decoder.up.0.block.0.norm1.bias 256
decoder.up.0.block.0.norm2.weight 128
decoder.up.0.block.0.norm2.bias 128
decoder.up.0.block.0.conv1.conv_1.weight 128,256,3,3,3
decoder.up.0.block.0.conv2.conv_1.weight 128,128,3,3,3
decoder.up.0.block.0.nin_shortcut.conv_1.weight 128,256,1,1,1
decoder.up.0.block.1.norm1.weight 128
decoder.up.0.block.1.norm1.bias 128
decoder.up.0.block.1.norm2.weight 128
decoder.up.0.block.1.norm2.bias 128
decoder.up.0.block.1.conv1.conv_1.weight 128,128,3,3,3
decoder.up.0.block.1.conv2.conv_1.weight 128,128,3,3,3
decoder.up.0.block.2.norm1.weight 128
decoder.up.0.block.2.norm1.bias 128
decoder.up.0.block.2.norm2.weight 128
decoder.up.0.block.2.norm2.bias 128
decoder.up.0.block.2.conv1.conv_1.weight 128,128,3,3,3
decoder.up.0.block.2.conv2.conv_1.weight 128,128,3,3,3
decoder.up.0.block.3.norm1.weight 128
decoder.up.0.block.3.norm1.bias 128
decoder.up.0.block.3.norm2.weight 128
decoder.up.0.block.3.norm2.bias 128
decoder.up.0.block.3.conv1.conv_1.weight 128,128,3,3,3
decoder.up.0.block.3.conv2.conv_1.weight 128,128,3,3,3
decoder.up.1.block.0.norm1.weight 256
decoder.up.1.block.0.norm1.bias 256
decoder.up.1.block.0.norm2.weight 256
decoder.up.1.block.0.norm2.bias 256
decoder.up.1.block.0.conv1.conv_1.weight 256,256,3,3,3
decoder.up.1.block.0.conv2.conv_1.weight 256,256,3,3,3
decoder.up.1.block.1.norm1.weight 256
decoder.up.1.block.1.norm1.bias 256
decoder.up.1.block.1.norm2.weight 256
decoder.up.1.block.1.norm2.bias 256
decoder.up.1.block.1.conv1.conv_1.weight 256,256,3,3,3
decoder.up.1.block.1.conv2.conv_1.weight 256,256,3,3,3
decoder.up.1.block.2.norm1.weight 256
decoder.up.1.block.2.norm1.bias 256
decoder.up.1.block.2.norm2.weight 256
decoder.up.1.block.2.norm2.bias 256
decoder.up.1.block.2.conv1.conv_1.weight 256,256,3,3,3
decoder.up.1.block.2.conv2.conv_1.weight 256,256,3,3,3
decoder.up.1.block.3.norm1.weight 256
decoder.up.1.block.3.norm1.bias 256
decoder.up.1.block.3.norm2.weight 256
decoder.up.1.block.3.norm2.bias 256
decoder.up.1.block.3.conv1.conv_1.weight 256,256,3,3,3
decoder.up.1.block.3.conv2.conv_1.weight 256,256,3,3,3
decoder.up.1.upsample.conv1.conv_1.weight 1024,256,3,3,3
decoder.up.1.upsample.conv1.conv_1.bias 1024
decoder.up.2.block.0.norm1.weight 512
decoder.up.2.block.0.norm1.bias 512
decoder.up.2.block.0.norm2.weight 256
decoder.up.2.block.0.norm2.bias 256
decoder.up.2.block.0.conv1.conv_1.weight 256,512,3,3,3
decoder.up.2.block.0.conv2.conv_1.weight 256,256,3,3,3
decoder.up.2.block.0.nin_shortcut.conv_1.weight 256,512,1,1,1
decoder.up.2.block.1.norm1.weight 256
decoder.up.2.block.1.norm1.bias 256
decoder.up.2.block.1.norm2.weight 256
decoder.up.2.block.1.norm2.bias 256
decoder.up.2.block.1.conv1.conv_1.weight 256,256,3,3,3
decoder.up.2.block.1.conv2.conv_1.weight 256,256,3,3,3
decoder.up.2.block.2.norm1.weight 256
decoder.up.2.block.2.norm1.bias 256
decoder.up.2.block.2.norm2.weight 256
decoder.up.2.block.2.norm2.bias 256
decoder.up.2.block.2.conv1.conv_1.weight 256,256,3,3,3
decoder.up.2.block.2.conv2.conv_1.weight 256,256,3,3,3
decoder.up.2.block.3.norm1.weight 256
decoder.up.2.block.3.norm1.bias 256
decoder.up.2.block.3.norm2.weight 256
decoder.up.2.block.3.norm2.bias 256
decoder.up.2.block.3.conv1.conv_1.weight 256,256,3,3,3
decoder.up.2.block.3.conv2.conv_1.weight 256,256,3,3,3
decoder.up.2.upsample.conv1.conv_1.weight 2048,256,3,3,3
decoder.up.2.upsample.conv1.conv_1.bias 2048
decoder.up.3.block.0.norm1.weight 512
decoder.up.3.block.0.norm1.bias 512
decoder.up.3.block.0.norm2.weight 512
decoder.up.3.block.0.norm2.bias 512
decoder.up.3.block.0.conv1.conv_1.weight 512,512,3,3,3
decoder.up.3.block.0.conv2.conv_1.weight 512,512,3,3,3
decoder.up.3.block.1.norm1.weight 512
decoder.up.3.block.1.norm1.bias 512
decoder.up.3.block.1.norm2.weight 512
decoder.up.3.block.1.norm2.bias 512
decoder.up.3.block.1.conv1.conv_1.weight 512,512,3,3,3
decoder.up.3.block.1.conv2.conv_1.weight 512,512,3,3,3
decoder.up.3.block.2.norm1.weight 512
decoder.up.3.block.2.norm1.bias 512
decoder.up.3.block.2.norm2.weight 512
decoder.up.3.block.2.norm2.bias 512
decoder.up.3.block.2.conv1.conv_1.weight 512,512,3,3,3
decoder.up.3.block.2.conv2.conv_1.weight 512,512,3,3,3
decoder.up.3.block.3.norm1.weight 512
decoder.up.3.block.3.norm1.bias 512
decoder.up.3.block.3.norm2.weight 512
decoder.up.3.block.3.norm2.bias 512
decoder.up.3.block.3.conv1.conv_1.weight 512,512,3,3,3
decoder.up.3.block.3.conv2.conv_1.weight 512,512,3,3,3
decoder.up.3.upsample.conv1.conv_1.weight 4096,512,3,3,3
decoder.up.3.upsample.conv1.conv_1.bias 4096
decoder.adaptive.0.gamma.weight 256,18
decoder.adaptive.0.gamma.bias 256
decoder.adaptive.0.beta.weight 256,18
decoder.adaptive.0.beta.bias 256
decoder.adaptive.1.gamma.weight 256,18
decoder.adaptive.1.gamma.bias 256
decoder.adaptive.1.beta.weight 256,18
decoder.adaptive.1.beta.bias 256
decoder.adaptive.2.gamma.weight 512,18
decoder.adaptive.2.gamma.bias 512
decoder.adaptive.2.beta.weight 512,18
decoder.adaptive.2.beta.bias 512
decoder.adaptive.3.gamma.weight 512,18
decoder.adaptive.3.gamma.bias 512
decoder.adaptive.3.beta.weight 512,18
decoder.adaptive.3.beta.bias 512
decoder.norm_out.weight 128
decoder.norm_out.bias 128
decoder.conv_out.conv_1.weight 3,128,3,3,3
decoder.conv_out.conv_1.bias 3
"""


def test_a_level_may_halve_time_only_for_a_finer_latent_grid() -> None:
    config = MagvitConfig(resolution=16, base_channels=8, channel_mult=(1, 2, 2),
                          num_res_blocks=1, norm_groups=4, time_downsample=(True, True),
                          space_downsample=(True, False))
    assert config.spatial_factor == 2 and config.temporal_factor == 4
    model = MagvitTokenizer(config).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        codes, indices = model.encode(video)
        assert codes.shape == (1, 18, 3, 8, 8) and indices.shape == (1, 3, 8, 8)
        assert model.decode(codes).shape == video.shape
    with pytest.raises(ConfigError, match="halve time, space or both"):
        MagvitConfig(channel_mult=(1, 2), base_channels=8, norm_groups=4,
                     time_downsample=(False,), space_downsample=(False,))
