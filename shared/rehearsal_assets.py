"""Stand-in downloads for a rehearsal: random weights in the exact layouts of the real files.

    python -m shared.rehearsal_assets --preset {micro,tiny,full} --output DIR [--seed N]

A rehearsal runs a preset at its true shapes before the real downloads are at hand, so every
file goes through the real loading code (strict key and shape checks included):

- The tokenizer, when the preset's default is a hub source (``full``:
  ``shared.presets.OFFICIAL_TOKENIZER``): a Hugging Face hub cache under ``DIR/hf_home/hub``
  laid out as ``huggingface_hub`` writes one (``blobs/<sha256>``, ``snapshots/<commit>/FILE``
  as a relative link to the blob, ``refs/main``), holding the official checkpoint layout:
  ``{"state_dict": ...}`` with the 283 raw weights, ``model_ema.decay`` and
  ``model_ema.num_updates``, and the 283 EMA copies (568 tensors, 2.96 GB for the official
  config). ``load_tokenizer("hf://...")`` then resolves it with ``HF_HOME=DIR/hf_home`` and
  ``HF_HUB_OFFLINE=1``. A config other than the official one (tests) also stores its config,
  as ``save_tokenizer`` does, since only the official file may go without.
- ``DIR/i3d.pt``: the piergiaj pytorch-i3d layout, a bare state dict without BatchNorm
  counters in the legacy (non-zip) format of its 2018 files; ``DIR/slowfast.pyth``: the
  pytorchvideo layout, ``{"epoch", "model_state", "optimizer_state", "cfg"}``. At ``full``
  they are the public Kinetics-400 configs and load with them; at ``micro`` and ``tiny`` the
  presets' configs, described in ``i3d.json`` / ``slowfast.json`` beside them as the motion
  pretraining does, so the variants' loaders rebuild the same shapes.
- ``DIR/assets.json``: ``{"env": {...}, "inputs": {"i3d": PATH, "slowfast": PATH}}``, the
  environment a rehearsal job needs (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``; empty
  when the tokenizer is not a hub source) and its ``--motion`` files, absolute paths.

Nothing is read from or written to the user's own hub cache: the files are written directly,
``huggingface_hub`` is not called. Weights are the modules' own initialisation (seeded), made
in fp32, their final dtype, and each file is saved once; the raw tokenizer weights are a
second initialisation, so they differ from the EMA ones as in a real file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared.checkpoint import HF_PREFIX, parse_hub_source
from shared.errors import ConfigError, run_cli
from shared.magvit.io import CONFIG_KEY, EMA_PREFIX
from shared.magvit.model import MagvitConfig, MagvitTokenizer, official_config, tokenizer_config
from shared.motion.i3d import I3DConfig, InceptionI3d, i3d_config
from shared.motion.slowfast import SlowFastConfig, SlowFastR50, slowfast_config
from shared.presets import STUDY_PRESETS, study_preset

ASSETS_FILE = "assets.json"
HF_HOME_DIR = "hf_home"
# The backbone configs each preset's variants load: the public files at full, the motion
# pretraining's presets below (branches/*/config.py and shared.motion.pretrain name the same).
MOTION_PRESETS: dict[str, tuple[str, str]] = {
    "micro": ("micro", "micro"),
    "tiny": ("tiny", "tiny"),
    "full": ("imagenet", "kinetics400"),
}
_COMMIT = re.compile(r"[0-9a-f]{40}")


def tokenizer_payload(ema: MagvitTokenizer, raw: MagvitTokenizer) -> dict[str, Any]:
    """The official checkpoint's content for EMA weights ``ema`` and raw weights ``raw``:
    raw ``encoder.*``/``decoder.*``, then ``model_ema.decay``, ``model_ema.num_updates`` and
    one ``model_ema.<name without dots>`` per weight, in the official order."""
    state_dict: dict[str, Tensor] = {k: v.detach() for k, v in raw.state_dict().items()}
    state_dict["model_ema.decay"] = torch.tensor(0.999, dtype=torch.float32)
    state_dict["model_ema.num_updates"] = torch.tensor(-1, dtype=torch.int32)
    for name, tensor in ema.state_dict().items():
        state_dict[EMA_PREFIX + name.replace(".", "")] = tensor.detach()
    payload: dict[str, Any] = {"state_dict": state_dict}
    if ema.config != official_config():  # the official file stores no config; others must
        payload[CONFIG_KEY] = asdict(ema.config)
    return payload


def write_tokenizer(path: Path, config: MagvitConfig, *, seed: int = 0) -> Path:
    """A tokenizer checkpoint in the official layout with seeded random weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ema = MagvitTokenizer(config)
        raw = MagvitTokenizer(config)
    return _save(tokenizer_payload(ema, raw), path)


def write_hub_file(hf_home: Path, source: str, write: Callable[[Path], Path]) -> Path:
    """Put a file in a hub cache under ``hf_home`` as ``hf_hub_download`` would have left it
    for ``source`` (``hf://OWNER/REPO/FILE[@REV]``); ``write(path)`` writes its content.
    Returns the snapshot path (a link to the blob)."""
    if not source.startswith(HF_PREFIX):
        raise ConfigError(f"{source!r} is not a hub source (hf://OWNER/REPO/FILE[@REV])")
    repo_id, filename, revision = parse_hub_source(source)
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    # Staged under the file's own name: torch.save names the archive inside after it, so the
    # bytes (and the blob's name) depend on the weights alone.
    staging = blobs / f".incoming-{os.getpid()}"
    staged = write(staging / Path(filename).name)
    blob = blobs / _sha256(staged)  # the hub names a large file's blob by its sha256
    os.replace(staged, blob)
    staging.rmdir()
    if revision is not None and _COMMIT.fullmatch(revision):
        commit = revision
    else:  # a stand-in commit, one per repo and revision, so a rerun replaces its file
        commit = hashlib.sha1(f"rehearsal {repo_id}@{revision or 'main'}".encode()).hexdigest()
        ref = repo / "refs" / (revision or "main")
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        previous = snapshot.resolve()
        snapshot.unlink()
        if previous != blob.resolve() and previous.parent == blobs.resolve():
            previous.unlink(missing_ok=True)  # an earlier run's stand-in: GBs nobody links to
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    return snapshot


def write_i3d(path: Path, config: I3DConfig, *, seed: int = 0, describe: bool) -> Path:
    """I3D in the piergiaj layout: bare state dict, no ``num_batches_tracked``, legacy
    format; with ``describe``, its config in ``<path>.json`` for the variants' loader."""
    state = {k: v for k, v in _seeded(InceptionI3d, config, seed).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    _save(state, path, legacy=True)
    _describe(path, "i3d", config if describe else None)
    return path


def write_slowfast(path: Path, config: SlowFastConfig, *, seed: int = 0, describe: bool) -> Path:
    """SlowFast R50 in pytorchvideo's ``.pyth`` layout (``model_state`` with the BN counters,
    beside the training run's epoch, optimizer state and yacs config dump)."""
    state = _seeded(SlowFastR50, config, seed).state_dict()
    _save({"epoch": 0, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
           "cfg": "# rehearsal stand-in: random weights\n"}, path)
    _describe(path, "slowfast", config if describe else None)
    return path


def write_assets(preset: str, output: Path, *, tokenizer: str | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """Write the stand-ins of ``preset`` into ``output`` and return ``assets.json``'s content.
    ``tokenizer`` replaces the preset's default tokenizer source (tests: a small one)."""
    study = study_preset(preset)
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    source = tokenizer or study.tokenizer
    if source is not None and source.startswith(HF_PREFIX):
        hf_home = output / HF_HOME_DIR
        config = tokenizer_config(study.tokenizer_preset)
        _timed(f"tokenizer {source}", lambda: write_hub_file(
            hf_home, source, lambda path: write_tokenizer(path, config, seed=seed)))
        env = {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
               "HF_HUB_OFFLINE": "1"}
    i3d_name, slowfast_name = MOTION_PRESETS[preset]
    public = preset == "full"
    inputs = {
        "i3d": _timed("i3d", lambda: write_i3d(output / "i3d.pt", i3d_config(i3d_name),
                                               seed=seed, describe=not public)),
        "slowfast": _timed("slowfast", lambda: write_slowfast(
            output / "slowfast.pyth", slowfast_config(slowfast_name), seed=seed,
            describe=not public)),
    }
    assets = {"env": env, "inputs": {k: str(v) for k, v in inputs.items()}}
    (output / ASSETS_FILE).write_text(json.dumps(assets, indent=2) + "\n")
    return assets


def _seeded(cls: type[nn.Module], config: Any, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cls(config)


def _describe(path: Path, backbone: str, config: I3DConfig | SlowFastConfig | None) -> None:
    """Write ``config`` beside ``path`` in the format shared.motion.pretrain writes (its
    saved_config reads it); None: the public config, so remove any earlier description."""
    description = path.with_suffix(".json")
    if config is None:
        description.unlink(missing_ok=True)
        return
    described = {"backbone": backbone, "config": asdict(config), "rehearsal": True}
    description.write_text(json.dumps(described, indent=2) + "\n")


def _save(payload: Any, path: Path, *, legacy: bool = False) -> Path:
    """torch.save once, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp, _use_new_zipfile_serialization=not legacy)
    os.replace(tmp, path)
    return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _timed(label: str, write: Callable[[], Path]) -> Path:
    started = time.perf_counter()
    path = write()
    size = path.resolve().stat().st_size
    print(f"{label}: {path} ({size / 1e6:,.1f} MB) in {time.perf_counter() - started:.1f}s",
          flush=True)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m shared.rehearsal_assets",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--preset", choices=sorted(STUDY_PRESETS), required=True)
    parser.add_argument("--output", type=Path, required=True, help="folder for the stand-ins")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    assets = write_assets(args.preset, args.output, seed=args.seed)
    print(f"wrote {args.output / ASSETS_FILE} in {time.perf_counter() - started:.1f}s",
          flush=True)
    return assets


if __name__ == "__main__":
    run_cli(main)
