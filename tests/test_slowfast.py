"""SlowFast R50: the public checkpoint's key contract, loading, input handling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.checkpoint import save_checkpoint
from shared.errors import CheckpointError, ConfigError
from shared.motion.slowfast import (
    SlowFastConfig,
    SlowFastFeatures,
    SlowFastR50,
    load_slowfast,
    slowfast_config,
)

# Measured on pytorchvideo's slowfast_r50 (the layout of SLOWFAST_8x8_R50.pyth).
KINETICS_KEY_SHAPES = {
    "blocks.0.multipathway_blocks.0.conv.weight": (64, 3, 1, 7, 7),
    "blocks.0.multipathway_blocks.1.conv.weight": (8, 3, 5, 7, 7),
    "blocks.0.multipathway_blocks.1.norm.running_var": (8,),
    "blocks.0.multipathway_fusion.conv_fast_to_slow.weight": (16, 8, 7, 1, 1),
    "blocks.1.multipathway_blocks.0.res_blocks.0.branch1_conv.weight": (256, 80, 1, 1, 1),
    "blocks.1.multipathway_blocks.0.res_blocks.0.branch2.conv_a.weight": (64, 80, 1, 1, 1),
    "blocks.1.multipathway_blocks.1.res_blocks.0.branch2.conv_a.weight": (8, 8, 3, 1, 1),
    "blocks.1.multipathway_blocks.0.res_blocks.1.branch2.conv_a.weight": (64, 256, 1, 1, 1),
    "blocks.3.multipathway_blocks.0.res_blocks.0.branch2.conv_a.weight": (256, 640, 3, 1, 1),
    "blocks.3.multipathway_fusion.conv_fast_to_slow.weight": (256, 128, 7, 1, 1),
    "blocks.4.multipathway_blocks.0.res_blocks.0.branch1_conv.weight": (2048, 1280, 1, 1, 1),
    "blocks.4.multipathway_blocks.1.res_blocks.0.branch2.conv_c.weight": (256, 64, 1, 1, 1),
    "blocks.6.proj.weight": (400, 2304),
    "blocks.6.proj.bias": (400,),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BN statistics, so a load that skipped anything would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator)
                # BN scales and variances (the 1-D weights) near 1, the rest small: finite outputs.
                near_one = name.endswith("running_var") or (
                    name.endswith(".weight") and tensor.dim() == 1
                )
                tensor.copy_(0.5 + values if near_one else 0.2 * (values - 0.5))
    return model.eval()


def _micro_model(seed: int = 0) -> SlowFastR50:
    torch.manual_seed(seed)
    return _randomise(SlowFastR50(slowfast_config("micro")), seed)  # type: ignore[return-value]


def _clip(batch: int = 1, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


# --- the public checkpoints' contract, on the meta device ---------------------------------------


def test_kinetics400_matches_public_checkpoint_layout() -> None:
    with torch.device("meta"):
        model = SlowFastR50(slowfast_config("kinetics400"))
    state = model.state_dict()
    assert len(state) == 662
    assert sum(not key.endswith("num_batches_tracked") for key in state) == 552
    assert sum(p.numel() for p in model.parameters()) == 34_566_488
    assert {key: tuple(state[key].shape) for key in KINETICS_KEY_SHAPES} == KINETICS_KEY_SHAPES
    # res5 has no fusion and blocks.5 (the pool) owns no keys.
    assert not any(k.startswith(("blocks.4.multipathway_fusion", "blocks.5")) for k in state)
    assert model.config.feature_dim == 2048 + 256


# --- loading ------------------------------------------------------------------------------


def test_pyth_wrapper_loads_strictly_and_reproduces_outputs(tmp_path) -> None:
    writer = _micro_model(seed=1)
    path = save_checkpoint(
        tmp_path / "slowfast.pyth",
        {
            "model_state": writer.state_dict(),
            "optimizer_state": {
                "state": {0: {"momentum_buffer": torch.ones(3)}},
                "param_groups": [{"lr": 0.1, "params": [0]}],
            },
            "epoch": 3,
            "cfg": "MODEL:\n  ARCH: slowfast\n",
        },
    )
    loaded = load_slowfast(path, config="micro")
    assert not loaded.training
    clip = _clip(batch=2, frames=12)
    with torch.no_grad():
        expected = SlowFastFeatures(writer)(clip)
        actual = SlowFastFeatures(loaded)(clip)
        fresh = SlowFastFeatures(_micro_model(seed=2))(clip)
    assert actual.shape == (2, loaded.config.feature_dim)
    assert torch.equal(actual, expected)
    assert not torch.allclose(fresh, expected)  # the comparison can tell weights apart


def test_bare_state_dict_with_dataparallel_prefix_loads(tmp_path) -> None:
    writer = _micro_model(seed=3)
    state = {f"module.{key}": value for key, value in writer.state_dict().items()}
    path = save_checkpoint(tmp_path / "bare.pt", state)
    loaded = load_slowfast(path, config=slowfast_config("micro"))
    for key, value in writer.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_missing_and_unexpected_keys_are_named(tmp_path) -> None:
    state = _micro_model().state_dict()
    state.pop("blocks.2.multipathway_fusion.norm.running_mean")
    state["blocks.6.extra.weight"] = torch.zeros(1)
    path = save_checkpoint(tmp_path / "broken.pyth", {"model_state": state, "epoch": 1})
    with pytest.raises(CheckpointError) as error:
        load_slowfast(path, config="micro")
    message = str(error.value)
    assert "blocks.2.multipathway_fusion.norm.running_mean" in message
    assert "blocks.6.extra.weight" in message
    assert "\n" not in message


def test_checkpoint_of_another_config_is_refused(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "micro.pyth", {"model_state": _micro_model().state_dict()})
    stem_key = "blocks.0.multipathway_blocks.0.conv.weight"
    with pytest.raises(CheckpointError, match=f"wrong shape.*{stem_key}"):
        load_slowfast(path)  # the kinetics400 default


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        ({"epoch": 3, "optimizer_state": {"lr": 0.1}}, "keys epoch, optimizer_state"),
        ([torch.zeros(2)], "a list"),
        ({"model_state": {"a": 1}}, "'model_state' is a dict, not a dict of tensors"),
    ],
)
def test_payload_without_weights_says_what_it_found(tmp_path, payload, found) -> None:
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=found):
        load_slowfast(path, config="micro")


# --- input handling ----------------------------------------------------------------------


def _frame_ids(pathway: torch.Tensor, config: SlowFastConfig, num_in: int) -> torch.Tensor:
    """Undo the normalisation of a clip whose frame t holds the value -1 + 2 t / (num_in - 1)."""
    mean = torch.tensor(config.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1, 1)
    values = (pathway * std + mean) * 2 - 1  # back to [-1, 1]
    ids = (values + 1) * (num_in - 1) / 2
    per_frame = ids[0, 0, :, 0, 0]
    assert torch.allclose(ids, per_frame.view(1, 1, -1, 1, 1).expand_as(ids), atol=1e-4)
    # Whole input frames only: a blend of two frames would give a fractional id.
    assert torch.allclose(per_frame, per_frame.round(), atol=1e-4)
    return per_frame.round().long()


def _ramp_clip(num_frames: int, size: int = 8) -> torch.Tensor:
    ramp = torch.linspace(-1, 1, num_frames).view(1, 1, num_frames, 1, 1)
    return ramp.expand(1, 3, num_frames, size, size).contiguous()


@pytest.mark.parametrize("num_in", [64, 32, 45, 5])
def test_pathways_pick_whole_frames_and_slow_is_every_alpha_th(num_in: int) -> None:
    with torch.device("meta"):
        backbone = SlowFastR50(slowfast_config("kinetics400"))
    features = SlowFastFeatures(backbone)
    config = features.config
    slow, fast = features.pathways(_ramp_clip(num_in))
    assert fast.shape[2] == config.fast_frames == 32
    assert slow.shape[2] == config.slow_frames == 8
    fast_ids = _frame_ids(fast, config, num_in)
    slow_ids = _frame_ids(slow, config, num_in)
    assert torch.equal(slow_ids, fast_ids[:: config.alpha])
    steps = fast_ids.diff()
    assert steps.min() >= 0 and steps.max() - steps.min() <= 1  # evenly spaced, in order
    if num_in == 32:
        assert torch.equal(fast_ids, torch.arange(32))
    if num_in < 32:  # a short clip repeats every frame, never drops one
        assert torch.equal(fast_ids.unique(), torch.arange(num_in))


def test_linspace_slow_selection_matches_the_reference_packing() -> None:
    with torch.device("meta"):
        backbone = SlowFastR50(slowfast_config("kinetics400", slow_selection="linspace"))
    features = SlowFastFeatures(backbone)
    slow, _ = features.pathways(_ramp_clip(32))
    assert _frame_ids(slow, features.config, 32).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]


def test_image_size_resizes_short_side_and_crops_square() -> None:
    features = SlowFastFeatures(SlowFastR50(slowfast_config("micro", image_size=24)))
    clip = torch.rand(2, 3, 5, 36, 60) * 2 - 1
    slow, fast = features.pathways(clip)
    assert fast.shape == (2, 3, 8, 24, 24) and slow.shape == (2, 3, 2, 24, 24)
    assert features(clip).shape == (2, features.feature_dim)


def test_kinetics400_features_on_a_small_clip() -> None:
    torch.manual_seed(0)
    features = SlowFastFeatures(SlowFastR50(slowfast_config("kinetics400")))
    clip = _clip(batch=2, frames=16, size=32)
    with torch.no_grad():
        pooled = features(clip)
        features.time_resolved = True
        per_step = features(clip)
    assert pooled.shape == (2, 2304)
    assert per_step.shape == (2, 8, 2304)
    assert torch.isfinite(pooled).all()
    # Equal groups of alpha fast steps per slow step, so the time mean is the pooled vector.
    assert torch.allclose(per_step.mean(dim=1), pooled, rtol=1e-4, atol=1e-5)


def test_logits_come_from_the_classifier_head() -> None:
    model = _micro_model()
    features = SlowFastFeatures(model)
    clip = _clip(batch=2)
    with torch.no_grad():
        slow, fast = features.pathways(clip)
        logits = model(slow, fast)
        expected = model.get_submodule("blocks.6.proj")(features(clip))
    assert logits.shape == (2, 10)
    assert torch.allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_frozen_backbone_gets_no_gradients_and_keeps_bn_statistics() -> None:
    features = SlowFastFeatures(_micro_model())
    parent = nn.ModuleDict({"motion": features}).train()  # a training model that holds it
    assert not features.backbone.training
    statistics = {k: v.clone() for k, v in features.backbone.state_dict().items()}
    clip = _clip().requires_grad_(True)
    features(clip).square().sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in parent.parameters())
    assert clip.grad is not None and clip.grad.abs().sum() > 0  # gradients still reach the input
    for key, value in features.backbone.state_dict().items():
        assert torch.equal(value, statistics[key]), key


def test_unfrozen_backbone_trains() -> None:
    features = SlowFastFeatures(_micro_model(), frozen=False).train()
    features(_clip(batch=2)).square().sum().backward()
    stem = features.backbone.get_parameter("blocks.0.multipathway_blocks.1.conv.weight")
    assert stem.grad is not None and stem.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("clip", "match"),
    [
        (torch.rand(1, 3, 8, 16, 16) * 255, r"\[-1, 1\]"),
        (torch.rand(1, 8, 3, 16, 16), r"\(B, 3, T, H, W\)"),
    ],
)
def test_bad_video_raises_config_error(clip: torch.Tensor, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SlowFastFeatures(_micro_model())(clip)


def test_mismatched_pathways_raise_config_error() -> None:
    model = _micro_model()
    with pytest.raises(ConfigError, match="alpha=4"):
        model.forward_features(_clip(frames=2), _clip(frames=6))


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="kinetics400, micro"):
        slowfast_config("large")
    with pytest.raises(ConfigError, match="num_frames"):
        slowfast_config("micro", num_frames=8)
    with pytest.raises(ConfigError, match="fast_frames"):
        SlowFastConfig(fast_frames=30)
    with pytest.raises(ConfigError, match="stem_width"):
        SlowFastConfig(stem_width=12)
