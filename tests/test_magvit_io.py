"""Tokenizer checkpoints in the official Open-MAGVIT2 layout: EMA preference, strictness, hub."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from shared.errors import CheckpointError
from shared.magvit import (
    MagvitTokenizer,
    checkpoint_sha256,
    load_tokenizer,
    save_tokenizer,
    tokenizer_config,
)


def micro(seed: int) -> MagvitTokenizer:
    torch.manual_seed(seed)
    return MagvitTokenizer(tokenizer_config("micro")).eval()


def video() -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.rand(1, 3, 5, 16, 16, generator=generator) * 2 - 1


def outputs(model: MagvitTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        codes, indices = model.encode(video())
        return indices, model.decode(codes)


def assert_same_outputs(a: MagvitTokenizer, b: MagvitTokenizer) -> None:
    indices_a, frames_a = outputs(a)
    indices_b, frames_b = outputs(b)
    assert torch.equal(indices_a, indices_b)
    assert torch.equal(frames_a, frames_b)


def test_raw_checkpoint_round_trips_strictly(tmp_path: Path) -> None:
    model = micro(0)
    path = save_tokenizer(model, tmp_path / "raw.ckpt")
    payload = torch.load(path, weights_only=True)
    assert set(payload["state_dict"]) == set(model.state_dict())  # no EMA entries
    loaded = load_tokenizer(path)
    assert loaded.config == model.config and not loaded.training
    assert_same_outputs(model, loaded)


def test_ema_checkpoint_has_the_official_layout_and_is_preferred(tmp_path: Path) -> None:
    raw, ema = micro(0), micro(1)
    path = save_tokenizer(raw, tmp_path / "ema.ckpt", ema_state=ema.state_dict())
    state = torch.load(path, weights_only=True)["state_dict"]
    own = list(raw.state_dict())
    assert len(state) == 2 * len(own) + 2
    assert state["model_ema.decay"].dtype == torch.float32 and state["model_ema.decay"].ndim == 0
    assert state["model_ema.num_updates"].dtype == torch.int32
    assert state["model_ema.num_updates"].item() == -1
    assert torch.equal(state["model_ema.decoderup1upsampleconv1conv_1weight"],
                       ema.state_dict()["decoder.up.1.upsample.conv1.conv_1.weight"])
    assert_same_outputs(load_tokenizer(path), ema)
    assert_same_outputs(load_tokenizer(path, prefer_ema=False), raw)


def test_official_file_without_config_ignores_training_keys(tmp_path: Path) -> None:
    raw, ema = micro(0), micro(1)
    state = dict(torch.load(save_tokenizer(raw, tmp_path / "a.ckpt", ema_state=ema.state_dict()),
                            weights_only=True)["state_dict"])
    state["loss.discriminator.main.0.weight"] = torch.zeros(3)
    state["model_ema.lossdiscriminatormain0weight"] = torch.zeros(3)
    official_like = tmp_path / "official_like.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, official_like)
    assert_same_outputs(load_tokenizer(official_like, config=tokenizer_config("micro")), ema)
    # no stored config means the official architecture, which these weights do not fit
    with pytest.raises(CheckpointError, match="missing"):
        load_tokenizer(official_like)


def test_corrupted_or_foreign_files_raise_checkpoint_errors(tmp_path: Path) -> None:
    good = save_tokenizer(micro(0), tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    listing = tmp_path / "list.ckpt"
    torch.save([torch.zeros(2)], listing)
    no_state = tmp_path / "no_state.ckpt"
    torch.save({"weights": {}}, no_state)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="not a readable"):
            load_tokenizer(path)
    for path in (listing, no_state):
        with pytest.raises(CheckpointError, match="state_dict"):
            load_tokenizer(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tokenizer(tmp_path / "absent.ckpt")


def test_wrong_keys_and_shapes_are_named(tmp_path: Path) -> None:
    model = micro(0)
    state = model.state_dict()
    renamed = dict(state)
    renamed["encoder.conv_in.conv.weight"] = renamed.pop("encoder.conv_in.conv_1.weight")
    path = tmp_path / "renamed.ckpt"
    torch.save({"state_dict": renamed}, path)
    with pytest.raises(CheckpointError) as error:
        load_tokenizer(path, config=model.config)
    assert "missing (1): encoder.conv_in.conv_1.weight" in str(error.value)
    assert "unexpected (1): encoder.conv_in.conv.weight" in str(error.value)

    reshaped = dict(state)
    reshaped["decoder.conv_out.conv_1.bias"] = torch.zeros(4)
    torch.save({"state_dict": reshaped}, path)
    with pytest.raises(CheckpointError, match=r"decoder.conv_out.conv_1.bias \(4,\) != \(3,\)"):
        load_tokenizer(path, config=model.config)

    ema = {"model_ema." + k.replace(".", ""): v for k, v in state.items()}
    del ema["model_ema.decodernorm_outbias"]
    torch.save({"state_dict": {**state, **ema}}, path)
    with pytest.raises(CheckpointError, match="missing \\(1\\): decoder.norm_out.bias"):
        load_tokenizer(path, config=model.config)

    wider = replace(model.config, base_channels=16)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_tokenizer(save_tokenizer(model, tmp_path / "m.ckpt"), config=wider)


def test_hub_source_resolves_offline_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    model = micro(0)
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-tokenizer"
    commit = "0123456789abcdef0123456789abcdef01234567"
    blob = repo / "blobs" / "deadbeef"
    blob.parent.mkdir(parents=True)
    save_tokenizer(model, blob)
    snapshot = repo / "snapshots" / commit / "weights" / "tok.ckpt"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once at import time
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    direct = huggingface_hub.hf_hub_download("someone/tiny-tokenizer", "weights/tok.ckpt")
    assert Path(direct).resolve() == blob.resolve()
    loaded = load_tokenizer("hf://someone/tiny-tokenizer/weights/tok.ckpt")
    assert_same_outputs(loaded, model)
    source = "hf://someone/tiny-tokenizer/weights/tok.ckpt"
    assert_same_outputs(load_tokenizer(f"{source}@{commit}"), model)
    assert checkpoint_sha256(source) == checkpoint_sha256(blob)
    with pytest.raises(CheckpointError, match="not in the local hub cache"):
        load_tokenizer("hf://someone/other-repo/tok.ckpt")


def test_content_hash_follows_the_bytes(tmp_path: Path) -> None:
    first = save_tokenizer(micro(0), tmp_path / "a.ckpt")
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(first.read_bytes())
    digest = checkpoint_sha256(first)
    assert len(digest) == 64 and digest == checkpoint_sha256(copy) == checkpoint_sha256(first)
    save_tokenizer(micro(1), first)  # same path, new content
    assert checkpoint_sha256(first) != digest
