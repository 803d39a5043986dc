"""Load and save tokenizers in the official Open-MAGVIT2 checkpoint layout.

The official file is ``{"state_dict": {...}}`` holding the raw weights under ``encoder.*`` and
``decoder.*``, plus ``model_ema.decay``, ``model_ema.num_updates`` and one EMA copy per weight,
named ``model_ema.`` + the weight name with every dot removed. The reported results use the
EMA weights, so they are preferred; the dot-free names map back by deleting the dots from our
own parameter names (that mapping is unique). Our own files add one top-level key,
``magvit_config`` (``asdict`` of the config), so small tokenizers rebuild their architecture
from the file; a file without it (the official one) gets the ``official`` config.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shared.checkpoint import load_strict, read_checkpoint, resolve_checkpoint, save_checkpoint
from shared.errors import CheckpointError, ConfigError
from shared.magvit.model import MagvitConfig, MagvitTokenizer, official_config

CONFIG_KEY = "magvit_config"
EMA_PREFIX = "model_ema."
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")


def _nodots(name: str) -> str:
    return name.replace(".", "")


def _is_ignored(key: str) -> bool:
    # Training-only entries: the loss (LPIPS / discriminator) and its EMA copies.
    return key.startswith("loss.") or key.startswith(EMA_PREFIX + "loss") or key in EMA_BOOKKEEPING


def _config_from_payload(payload: Mapping[str, Any], source: str) -> MagvitConfig:
    stored = payload.get(CONFIG_KEY)
    if stored is None:
        return official_config()
    known = {f.name for f in fields(MagvitConfig)}
    if not isinstance(stored, Mapping) or not set(stored) <= known:
        raise CheckpointError(
            f"{source} has a {CONFIG_KEY!r} entry this version cannot read: pass config= "
            "explicitly or re-save the tokenizer"
        )
    try:
        return MagvitConfig(**dict(stored))
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{source} holds an invalid tokenizer config: {error}") from None


def select_weights(
    state_dict: Mapping[str, Tensor], parameter_names: list[str], *, prefer_ema: bool
) -> tuple[dict[str, Tensor], bool]:
    """The tensors to load, under our dotted names, and whether they are the EMA copies.

    EMA entries that belong to no parameter stay under their own name so the strict load
    reports them as unexpected.
    """
    ema_keys = [k for k in state_dict if k.startswith(EMA_PREFIX) and not _is_ignored(k)]
    if prefer_ema and ema_keys:
        dotted = {_nodots(name): name for name in parameter_names}
        assert len(dotted) == len(parameter_names), "dot-free parameter names must be unique"
        chosen: dict[str, Tensor] = {}
        for key in ema_keys:
            name = dotted.get(key[len(EMA_PREFIX) :])
            chosen[name if name is not None else key] = state_dict[key]
        return chosen, True
    raw = {
        k: v for k, v in state_dict.items() if not k.startswith(EMA_PREFIX) and not _is_ignored(k)
    }
    return raw, False


def load_tokenizer(
    source: str | os.PathLike[str],
    *,
    config: MagvitConfig | None = None,
    prefer_ema: bool = True,
    device: str | torch.device = "cpu",
) -> MagvitTokenizer:
    """Build a tokenizer from a local path or ``hf://OWNER/REPO/FILE[@REV]``, strictly loaded.

    ``config`` overrides the one stored in the file (the official file stores none, so it gets
    the ``official`` config). Returned in eval mode. Raises CheckpointError for an unreadable
    file, a wrong layout, or missing/unexpected/mis-shaped weights (named in the message).
    """
    text = os.fspath(source)
    # mmap: the official file is ~3 GB, of which only the EMA half is used.
    payload = read_checkpoint(source, mmap=True)
    if not isinstance(payload, Mapping) or not isinstance(payload.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{text} is not a tokenizer checkpoint (no 'state_dict' dict at the top level): "
            "pass an Open-MAGVIT2 .ckpt or a file written by save_tokenizer"
        )
    state_dict = payload["state_dict"]
    bad = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{text}: state_dict entries that are not tensors: {bad[:5]}")
    if config is None:
        config = _config_from_payload(payload, text)
    # Built on the meta device and then given the file's tensors: no second copy of the weights.
    with torch.device("meta"):
        tokenizer = MagvitTokenizer(config)
    names = list(tokenizer.state_dict())
    weights, _ = select_weights(state_dict, names, prefer_ema=prefer_ema)
    weights = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()}
    load_strict(tokenizer, weights, text, assign=True)
    return tokenizer.to(device).eval()


def save_tokenizer(
    tokenizer: MagvitTokenizer,
    path: str | os.PathLike[str],
    *,
    ema_state: Mapping[str, Tensor] | None = None,
    ema_decay: float = 0.999,
) -> Path:
    """Write ``tokenizer`` atomically in the official layout, plus its config.

    ``ema_state`` maps our parameter names (as in ``tokenizer.state_dict()``) to EMA weights;
    when given, they are stored as ``model_ema.<name without dots>`` with the official
    bookkeeping scalars (``num_updates`` = -1, as the official constant-decay EMA leaves it).
    Without it the file holds only the raw weights and loads from those.
    """
    own = {
        k: v.detach().to("cpu", torch.float32).clone() for k, v in tokenizer.state_dict().items()
    }
    state_dict: dict[str, Tensor] = dict(own)
    if ema_state is not None:
        missing = sorted(set(own) - set(ema_state))
        extra = sorted(set(ema_state) - set(own))
        if missing or extra:
            raise CheckpointError(
                f"ema_state does not match the tokenizer (missing {missing[:5]}, extra "
                f"{extra[:5]}): pass a dict keyed like tokenizer.state_dict()"
            )
        state_dict["model_ema.decay"] = torch.tensor(ema_decay, dtype=torch.float32)
        state_dict["model_ema.num_updates"] = torch.tensor(-1, dtype=torch.int32)
        for name in own:
            state_dict[EMA_PREFIX + _nodots(name)] = (
                ema_state[name].detach().to("cpu", torch.float32).clone()
            )
    config = asdict(tokenizer.config)
    return save_checkpoint(path, {"state_dict": state_dict, CONFIG_KEY: config})


@functools.lru_cache(maxsize=64)
def _sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_sha256(source: str | os.PathLike[str]) -> str:
    """Hex sha256 of a checkpoint file's bytes: a cache key that follows the content.

    Memoised by (resolved path, inode, size, mtime), so asking again for an unchanged file is
    free, and a file replaced atomically (a new inode) is hashed again.
    """
    path = resolve_checkpoint(source).resolve()
    stat = path.stat()
    return _sha256(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
