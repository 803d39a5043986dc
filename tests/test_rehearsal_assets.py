"""Rehearsal stand-ins at micro: each file goes through the real loader, strictly; the
tokenizer through an ``hf://`` source resolved offline from the hub cache they lay out."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from branches.joint_i3d.config import joint_i3d_config
from branches.joint_i3d.train import load_motion
from shared.magvit import MagvitTokenizer, checkpoint_sha256, load_tokenizer, tokenizer_config
from shared.motion.i3d import i3d_config, load_i3d
from shared.motion.pretrain import load_motion_backbone
from shared.motion.slowfast import load_slowfast, slowfast_config
from shared.rehearsal_assets import main, tokenizer_payload, write_assets

SOURCE = "hf://someone/micro-tokenizer/video_micro.ckpt"


@pytest.fixture()
def user_hub(tmp_path, monkeypatch):
    """The user's own hub cache, which writing the stand-ins must leave alone."""
    home = tmp_path / "user_hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    return home


def test_micro_motion_files_load_strictly_through_the_real_loaders(tmp_path, user_hub):
    assets = main(["--preset", "micro", "--output", str(tmp_path / "assets")])
    assert assets == json.loads((tmp_path / "assets" / "assets.json").read_text())
    assert assets["env"] == {}  # micro's tokenizer is no hub source
    i3d_path, slowfast_path = Path(assets["inputs"]["i3d"]), Path(assets["inputs"]["slowfast"])
    assert i3d_path.is_absolute() and slowfast_path.is_absolute()

    # I3D: the 2018 files' format, a bare state dict without BN counters, legacy pickle.
    assert not zipfile.is_zipfile(i3d_path)
    state = torch.load(i3d_path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not any(k.endswith("num_batches_tracked") for k in state)
    i3d = load_i3d(i3d_path, config=i3d_config("micro"))
    assert all(torch.equal(i3d.state_dict()[k], v) for k, v in state.items())
    # joint-i3d's own loader finds the micro config beside the file.
    assert load_motion(joint_i3d_config("micro"), str(i3d_path)).config == i3d.config

    # SlowFast: pytorchvideo's wrapper, weights under model_state.
    payload = torch.load(slowfast_path, weights_only=True)
    assert set(payload) == {"epoch", "model_state", "optimizer_state", "cfg"}
    slowfast = load_slowfast(slowfast_path, config=slowfast_config("micro"))
    assert all(torch.equal(slowfast.state_dict()[k], v)
               for k, v in payload["model_state"].items())
    # slowfast-frozen's loader (the motion pretraining's rules) rebuilds the micro config.
    assert load_motion_backbone(slowfast_path, backbone="slowfast").config == slowfast.config
    assert list(user_hub.iterdir()) == []


def test_hub_tokenizer_resolves_offline_from_the_written_cache(tmp_path, user_hub, monkeypatch):
    from huggingface_hub import constants

    assets = write_assets("micro", tmp_path / "assets", tokenizer=SOURCE)
    env = assets["env"]
    hub = Path(env["HF_HUB_CACHE"])
    assert env["HF_HUB_OFFLINE"] == "1" and hub == Path(env["HF_HOME"]) / "hub"
    assert list(user_hub.iterdir()) == []  # nothing went to the user's cache

    # huggingface_hub's layout: blobs named by the content's sha256, a snapshot link, a ref.
    repo = hub / "models--someone--micro-tokenizer"
    commit = (repo / "refs" / "main").read_text()
    snapshot = repo / "snapshots" / commit / "video_micro.ckpt"
    assert len(commit) == 40 and snapshot.is_symlink()
    assert not os.path.isabs(os.readlink(snapshot))
    (blob,) = (repo / "blobs").iterdir()
    assert snapshot.resolve() == blob.resolve() and checkpoint_sha256(blob) == blob.name

    # What a rehearsal job's environment gives huggingface_hub (read once at import).
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tokenizer = load_tokenizer(SOURCE)
    assert tokenizer.config == tokenizer_config("micro")
    state_dict = torch.load(blob, weights_only=True)["state_dict"]
    for name, tensor in tokenizer.state_dict().items():  # the EMA copies, as officially
        assert torch.equal(tensor, state_dict["model_ema." + name.replace(".", "")]), name
        # The raw weights are another initialisation (norms start at 1 and 0 in both).
        assert tensor.dim() == 1 or not torch.equal(tensor, state_dict[name]), name
    with torch.no_grad():
        codes, _ = tokenizer.encode(torch.zeros(1, 3, 9, 16, 16))
    assert codes.shape == (1, 18, 3, 4, 4)

    # A rerun with other weights replaces the file; the old blob does not linger.
    write_assets("micro", tmp_path / "assets", tokenizer=SOURCE, seed=1)
    (new_blob,) = (repo / "blobs").iterdir()
    assert new_blob != blob and snapshot.resolve() == new_blob.resolve()


def test_official_payload_has_the_568_official_entries_and_no_config():
    # Built on the meta device: the layout of the 2.96 GB file without writing it.
    with torch.device("meta"):
        ema = MagvitTokenizer(tokenizer_config("official"))
        raw = MagvitTokenizer(tokenizer_config("official"))
    payload = tokenizer_payload(ema, raw)
    assert list(payload) == ["state_dict"]  # the official file carries no config
    keys = list(payload["state_dict"])
    assert len(keys) == 568
    assert keys[:283] == list(raw.state_dict())
    assert keys[283:285] == ["model_ema.decay", "model_ema.num_updates"]
    assert "model_ema.decoderup3upsampleconv1conv_1weight" in keys
    sizes = sum(t.numel() * t.element_size() for t in payload["state_dict"].values())
    assert round(sizes / 1e9, 2) == 2.96
    assert payload["state_dict"]["model_ema.num_updates"].dtype == torch.int32
