"""I3D backbone: public checkpoint layout, SAME padding, loading, input conventions, freezing.

Layout facts (key counts, shapes, parameter totals, endpoint sizes) are the measured numbers
of the public piergiaj/pytorch-i3d module; full-size models are only built on the meta
device. Forward tests use the micro preset or tiny clips.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch

from shared.errors import CheckpointError, ConfigError
from shared.motion.i3d import (
    ENDPOINTS,
    I3DFeatures,
    InceptionI3d,
    MaxPool3dSame,
    Unit3D,
    i3d_config,
    load_i3d,
    same_padding,
)
from shared.motion.inputs import frame_indices, resize_and_crop, select_frames

# block: (in, b0, b1a, b1b, b2a, b2b, b3b, out) as published.
PUBLIC_BLOCKS = {
    "Mixed_3b": (192, 64, 96, 128, 16, 32, 32, 256),
    "Mixed_3c": (256, 128, 128, 192, 32, 96, 64, 480),
    "Mixed_4b": (480, 192, 96, 208, 16, 48, 64, 512),
    "Mixed_4c": (512, 160, 112, 224, 24, 64, 64, 512),
    "Mixed_4d": (512, 128, 128, 256, 24, 64, 64, 512),
    "Mixed_4e": (512, 112, 144, 288, 32, 64, 64, 528),
    "Mixed_4f": (528, 256, 160, 320, 32, 128, 128, 832),
    "Mixed_5b": (832, 256, 160, 320, 32, 128, 128, 832),
    "Mixed_5c": (832, 384, 192, 384, 48, 128, 128, 1024),
}
# (channels, T, H, W) of each endpoint for a 1 x 3 x 16 x 224 x 224 clip.
PUBLIC_ENDPOINT_SHAPES = {
    "Conv3d_1a_7x7": (64, 8, 112, 112),
    "MaxPool3d_2a_3x3": (64, 8, 56, 56),
    "Conv3d_2b_1x1": (64, 8, 56, 56),
    "Conv3d_2c_3x3": (192, 8, 56, 56),
    "MaxPool3d_3a_3x3": (192, 8, 28, 28),
    "Mixed_3b": (256, 8, 28, 28),
    "Mixed_3c": (480, 8, 28, 28),
    "MaxPool3d_4a_3x3": (480, 4, 14, 14),
    "Mixed_4b": (512, 4, 14, 14),
    "Mixed_4c": (512, 4, 14, 14),
    "Mixed_4d": (512, 4, 14, 14),
    "Mixed_4e": (528, 4, 14, 14),
    "Mixed_4f": (832, 4, 14, 14),
    "MaxPool3d_5a_2x2": (832, 2, 7, 7),
    "Mixed_5b": (832, 2, 7, 7),
    "Mixed_5c": (1024, 2, 7, 7),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def meta_model(preset: str) -> InceptionI3d:
    with torch.device("meta"):
        return InceptionI3d(i3d_config(preset))


def random_video(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator) * 2 - 1


def randomised_micro(seed: int = 0) -> InceptionI3d:
    """Micro model with non-trivial BN statistics, so a lost buffer changes the output."""
    torch.manual_seed(seed)
    model = InceptionI3d(i3d_config("micro"))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.num_batches_tracked.fill_(7)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


# --- public layout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "num_classes", "num_params"),
    [("imagenet", 400, 12_697_264), ("charades", 157, 12_448_189), ("fvd", 400, 12_697_264)],
)
def test_state_dict_matches_public_checkpoints(preset: str, num_classes: int, num_params: int):
    model = meta_model(preset)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    counters = [key for key in shapes if key.endswith("num_batches_tracked")]
    assert (len(shapes), len(counters), len(shapes) - len(counters)) == (344, 57, 287)
    assert sum(p.numel() for p in model.parameters()) == num_params

    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_1a_7x7.bn.running_var"] == (64,)
    assert shapes["Conv3d_2b_1x1.conv3d.weight"] == (64, 64, 1, 1, 1)
    assert shapes["Conv3d_2c_3x3.conv3d.weight"] == (192, 64, 3, 3, 3)
    assert shapes["logits.conv3d.weight"] == (num_classes, 1024, 1, 1, 1)
    assert shapes["logits.conv3d.bias"] == (num_classes,)
    assert not any(key.startswith("logits.bn") for key in shapes)
    for block, (cin, b0, b1a, b1b, b2a, b2b, b3b, _) in PUBLIC_BLOCKS.items():
        expected = {
            "b0": (b0, cin, 1, 1, 1),
            "b1a": (b1a, cin, 1, 1, 1),
            "b1b": (b1b, b1a, 3, 3, 3),
            "b2a": (b2a, cin, 1, 1, 1),
            "b2b": (b2b, b2a, 3, 3, 3),
            "b3b": (b3b, cin, 1, 1, 1),
        }
        for unit, shape in expected.items():
            assert shapes[f"{block}.{unit}.conv3d.weight"] == shape
            for stat in ("weight", "bias", "running_mean", "running_var"):
                assert shapes[f"{block}.{unit}.bn.{stat}"] == (shape[0],)
            assert shapes[f"{block}.{unit}.bn.num_batches_tracked"] == ()


def test_endpoint_sizes_match_public_model_at_224():
    # Sizes depend only on kernels, strides and padding, which width does not change; channels
    # are covered by the state-dict test (a meta-device forward costs seconds of set-up).
    model = InceptionI3d(i3d_config("micro")).eval()
    with torch.no_grad():
        out = model.extract(torch.zeros(1, 3, 16, 224, 224), ENDPOINTS)
    for name, (_, *size_thw) in PUBLIC_ENDPOINT_SHAPES.items():
        assert tuple(out[name].shape[2:]) == tuple(size_thw), name
    assert tuple(out["Features"].shape) == (1, model.config.feature_dim)
    assert tuple(out["Logits"].shape) == (1, model.config.num_classes)


@pytest.mark.parametrize(
    ("preset", "eps", "momentum"), [("imagenet", 1e-3, 0.01), ("fvd", 1e-5, 1e-3)]
)
def test_batch_norm_settings_follow_the_preset(preset: str, eps: float, momentum: float):
    norms = [m for m in meta_model(preset).modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(norms) == 57
    assert all(m.eps == eps and m.momentum == momentum for m in norms)


def test_bad_presets_and_config_values_raise_config_error():
    with pytest.raises(ConfigError, match="imagenet"):
        i3d_config("kinetics")
    with pytest.raises(ConfigError, match="num_frames"):
        dataclasses.replace(i3d_config("imagenet"), num_frames=8)
    with pytest.raises(ConfigError, match="Mixed_9z"):
        meta_model("imagenet").extract(torch.empty(1, 3, 9, 32, 32, device="meta"), ["Mixed_9z"])


# --- SAME padding --------------------------------------------------------------------------


def test_same_padding_follows_the_tensorflow_rule():
    for size in range(1, 24):
        for kernel in range(1, 8):
            for stride in range(1, 4):
                front, back = same_padding(size, kernel, stride)
                out_size = math.ceil(size / stride)
                # TF: pad just enough that ceil(n / s) windows fit; the odd extra goes last.
                assert front + back == max((out_size - 1) * stride + kernel - size, 0)
                assert back - front in (0, 1)
                assert (size + front + back - kernel) // stride + 1 == out_size


def test_same_padded_layers_give_ceil_sizes_on_odd_inputs():
    config = i3d_config("micro")
    x = random_video(1, 3, 9, 33, 31)
    conv = Unit3D(3, 4, (7, 7, 7), (2, 2, 2), config=config)
    assert tuple(conv(x).shape) == (1, 4, 5, 17, 16)
    pool = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    assert tuple(pool(x).shape) == (1, 3, 5, 17, 16)
    out = InceptionI3d(config).extract(x, ["MaxPool3d_2a_3x3", "MaxPool3d_4a_3x3", "Mixed_5c"])
    assert tuple(out["MaxPool3d_2a_3x3"].shape[2:]) == (5, 9, 8)
    assert tuple(out["MaxPool3d_4a_3x3"].shape[2:]) == (3, 3, 2)
    assert tuple(out["Mixed_5c"].shape[2:]) == (2, 2, 1)


def test_same_padding_puts_the_odd_pixel_at_the_back():
    # A 2-tap box filter along W: TF pads one zero after the row, none before.
    conv = Unit3D(1, 1, (1, 1, 2), config=i3d_config("micro"), classifier=True)
    with torch.no_grad():
        conv.conv3d.weight.fill_(1.0)
        conv.conv3d.bias.zero_()
        row = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 1, 3)
        assert conv(row).flatten().tolist() == [3.0, 5.0, 3.0]


# --- features on small inputs --------------------------------------------------------------


def test_full_width_model_gives_1024_features_on_a_small_clip():
    torch.manual_seed(0)
    config = dataclasses.replace(i3d_config("imagenet"), image_size=None)
    features = I3DFeatures(InceptionI3d(config))
    video = random_video(2, 3, 9, 32, 32)
    with torch.no_grad():
        pooled = features(video)
        features.time_resolved = True
        tokens = features(video)
    assert pooled.shape == (2, 1024) and torch.isfinite(pooled).all()
    # 16 selected frames -> Mixed_5c keeps ceil(16 / 8) = 2 time steps.
    assert tokens.shape == (2, 2, 1024)
    torch.testing.assert_close(tokens.mean(dim=1), pooled)


def test_features_resize_the_frames_to_the_configured_size():
    model = InceptionI3d(i3d_config("micro")).eval()
    video = random_video(1, 3, 12, 40, 56)
    expected = model.features(resize_and_crop(select_frames(video, 9), 32))
    torch.testing.assert_close(I3DFeatures(model)(video), expected)


@pytest.mark.parametrize("num_frames", [1, 8])
def test_fewer_than_nine_frames_is_a_clear_error(num_frames: int):
    features = I3DFeatures(InceptionI3d(i3d_config("micro")))
    with pytest.raises(ConfigError, match="at least 9 frames"):
        features(random_video(1, 3, num_frames, 32, 32))


def test_wrong_layout_or_value_range_is_a_clear_error():
    features = I3DFeatures(InceptionI3d(i3d_config("micro")))
    with pytest.raises(ConfigError, match=r"\(B, 3, T, H, W\)"):
        features(random_video(1, 9, 3, 32, 32))
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        features(torch.rand(1, 3, 9, 32, 32) * 255)


# --- frame selection -----------------------------------------------------------------------


@pytest.mark.parametrize(("num_in", "num_out"), [(9, 16), (16, 16), (32, 16), (10, 7), (3, 11)])
def test_frame_selection_copies_whole_frames_evenly(num_in: int, num_out: int):
    # Frame t is the constant t + 1 plus noise, so a blended frame would match no input frame.
    video = random_video(2, 3, num_in, 4, 5) * 0.01 + torch.arange(1.0, num_in + 1).view(
        1, 1, -1, 1, 1
    )
    selected = select_frames(video, num_out)
    assert selected.shape == (2, 3, num_out, 4, 5)
    picked = []
    for t in range(num_out):
        matches = [i for i in range(num_in) if torch.equal(selected[:, :, t], video[:, :, i])]
        assert len(matches) == 1, f"output frame {t} is not an exact copy of an input frame"
        picked.append(matches[0])
    assert picked == frame_indices(num_in, num_out).tolist()
    steps = [b - a for a, b in zip(picked, picked[1:], strict=False)]
    assert all(step >= 0 for step in steps)  # time order kept
    if steps:
        assert max(steps) - min(steps) <= 1  # evenly spaced
    if num_out >= num_in:
        assert sorted(set(picked)) == list(range(num_in))  # no frame dropped when upsampling


def test_resizing_never_mixes_frames():
    levels = torch.linspace(-1, 1, 9)
    video = levels.view(1, 1, 9, 1, 1).expand(2, 3, 9, 40, 60).contiguous()
    resized = resize_and_crop(video, 32)
    assert resized.shape == (2, 3, 9, 32, 32)
    torch.testing.assert_close(resized, levels.view(1, 1, 9, 1, 1).expand_as(resized))


# --- loading -------------------------------------------------------------------------------


def bare_state_dict(model: InceptionI3d, *, counters: bool) -> OrderedDict[str, torch.Tensor]:
    """The public file layout: an OrderedDict of tensors, optionally without BN counters."""
    return OrderedDict(
        (key, value.clone())
        for key, value in model.state_dict().items()
        if counters or not key.endswith("num_batches_tracked")
    )


@pytest.mark.parametrize("counters", [True, False])
def test_public_layout_checkpoint_loads_strictly_with_identical_outputs(tmp_path, counters):
    writer = randomised_micro()
    path = tmp_path / "rgb_micro.pt"
    # The 2018 files are also in the legacy (non-zip) format; imitate that for the old layout.
    torch.save(
        bare_state_dict(writer, counters=counters), path, _use_new_zipfile_serialization=counters
    )
    loaded = load_i3d(path, config="micro")
    assert not loaded.training
    video = random_video(2, 3, 9, 32, 32, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(video), writer(video))
        assert torch.equal(loaded.features(video), writer.features(video))
    loaded_counter = loaded.Mixed_4c.b1b.bn.num_batches_tracked.item()
    assert loaded_counter == (7 if counters else 0)


@pytest.mark.parametrize("wrap", ["state_dict", "model_state", "module."])
def test_wrapped_and_data_parallel_state_dicts_load(tmp_path, wrap):
    writer = randomised_micro()
    state = bare_state_dict(writer, counters=True)
    payload = (
        {f"module.{key}": value for key, value in state.items()}
        if wrap == "module."
        else {wrap: state, "epoch": 3}
    )
    torch.save(payload, tmp_path / "wrapped.pt")
    loaded = load_i3d(tmp_path / "wrapped.pt", config=i3d_config("micro"))
    video = random_video(1, 3, 9, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(video), writer(video))


def test_wrong_key_names_the_key(tmp_path):
    state = bare_state_dict(randomised_micro(), counters=False)
    state["Mixed_4c.b1x.conv3d.weight"] = state.pop("Mixed_4c.b1b.conv3d.weight")
    torch.save(state, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError) as error:
        load_i3d(tmp_path / "renamed.pt", config="micro")
    assert "Mixed_4c.b1b.conv3d.weight" in str(error.value)  # missing
    assert "Mixed_4c.b1x.conv3d.weight" in str(error.value)  # unexpected


def test_wrong_class_count_or_payload_is_a_checkpoint_error(tmp_path):
    torch.save(bare_state_dict(randomised_micro(), counters=True), tmp_path / "micro.pt")
    other_head = dataclasses.replace(i3d_config("micro"), num_classes=5)
    with pytest.raises(CheckpointError, match=r"logits\.conv3d\.weight"):
        load_i3d(tmp_path / "micro.pt", config=other_head)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not an I3D state dict"):
        load_i3d(tmp_path / "list.pt", config="micro")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_i3d(tmp_path / "missing.pt", config="micro")


# --- frozen mode ---------------------------------------------------------------------------


def test_frozen_features_take_no_gradients_and_keep_batch_norm_in_eval():
    model = randomised_micro()
    stats_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    features = I3DFeatures(model)  # frozen by default
    parent = torch.nn.Sequential(features)
    parent.train()  # a training parent must not switch the frozen backbone to training mode
    assert not any(m.training for m in features.modules())
    assert not any(p.requires_grad for p in features.parameters())

    video = random_video(2, 3, 9, 32, 32).requires_grad_()
    features(video).square().sum().backward()
    assert all(p.grad is None for p in features.parameters())
    assert video.grad is not None and video.grad.abs().sum() > 0  # the input still learns
    for key, value in model.state_dict().items():
        if key in stats_before:
            assert torch.equal(value, stats_before[key]), f"{key} changed while frozen"

    trainable = I3DFeatures(randomised_micro(), frozen=False).train()
    trainable(random_video(2, 3, 9, 32, 32)).square().sum().backward()
    # Everything but the classifier (which features do not use) learns when not frozen.
    assert all(
        (p.grad is None) == name.startswith("backbone.logits.")
        for name, p in trainable.named_parameters()
    )
