"""Checkpoint I/O shared by the tokenizer and the motion backbones.

A checkpoint source is a local path or ``hf://OWNER/REPO/FILE[@REVISION]``; the latter goes
through huggingface_hub, so its cache and ``HF_HUB_OFFLINE=1`` are honoured. Files are read
with ``torch.load(weights_only=True)``: the official checkpoints hold only tensors, dicts and
numbers, and no pickle from the internet gets to run code. Loading into a module is strict,
and a mismatch names the missing and unexpected keys.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shared.errors import CheckpointError

HF_PREFIX = "hf://"


def parse_hub_source(source: str) -> tuple[str, str, str | None]:
    """``hf://owner/repo/path/in/repo.ckpt[@rev]`` -> (repo_id, filename, revision)."""
    spec = source[len(HF_PREFIX) :]
    revision = None
    if "@" in spec:
        spec, revision = spec.rsplit("@", 1)
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise CheckpointError(
            f"bad hub checkpoint {source!r}: write it as hf://OWNER/REPO/FILE[@REVISION]"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def resolve_checkpoint(source: str | os.PathLike[str]) -> Path:
    """Return a local file for ``source``, downloading (or finding in the hub cache) if needed."""
    text = os.fspath(source)
    if text.startswith(HF_PREFIX):
        repo_id, filename, revision = parse_hub_source(text)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except LocalEntryNotFoundError as error:
            raise CheckpointError(
                f"{text} is not in the local hub cache and cannot be downloaded "
                f"(offline or no network): download it once with network access, or pass a "
                f"local path ({type(error).__name__})"
            ) from None
        except (HfHubHTTPError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot fetch {text}: {error}".splitlines()[0]) from None
    path = Path(text).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {text} does not exist: check the path")
    return path


def read_checkpoint(source: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """Resolve and ``torch.load`` a checkpoint on the CPU with ``weights_only=True``.

    ``mmap=True`` maps the tensors from the file instead of reading them all (copy-on-write),
    so a multi-GB file whose tensors are only partly used costs little memory; files in the
    legacy (non-zip) format are read normally.
    """
    path = resolve_checkpoint(source)
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as error:
        raise CheckpointError(_load_error(os.fspath(source), error)) from None


# Torch's advice on a refused file: load it with weights_only=False, i.e. run the code the
# file holds. It is never passed on; the lines of torch's message that give it are dropped.
_TORCH_ADVICE = re.compile(r"weights.only|trusted source|torch\.load|add_safe_globals", re.I)


def _load_error(source: str, error: Exception) -> str:
    """One line on why ``source`` did not load weights-only."""
    text = str(error).strip()
    named = re.search(r"GLOBAL (\S+)", text) or re.search(r"got <class '([^']+)'>", text)
    if named is not None:  # refused as unsafe: it pickles a class or function
        return (f"{source} holds Python objects beyond tensors and plain containers "
                f"(unsupported global {named.group(1)}); it is loaded weights-only on purpose, "
                "so that reading a file never runs code from it: re-save it as a state dict "
                "(torch.save(model.state_dict(), path))")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _TORCH_ADVICE.search(ln)]
    detail = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
    return (f"{source} is not a readable weights-only torch checkpoint ({detail}): re-download "
            "it, or re-save it as a state dict")


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    assign: bool = False,
) -> None:
    """``load_state_dict(strict=True)`` whose error lists missing/unexpected keys and shape clashes.

    ``assign=True`` makes the module use the given tensors instead of copying into its own,
    which is how a module built on the meta device gets real weights without allocating twice.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(
        f"{key} {tuple(state_dict[key].shape)} != {tuple(own[key].shape)}"
        for key in set(own) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(own[key].shape)
    )
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{source} does not match {type(module).__name__}: "
            + "; ".join(
                f"{label} ({len(keys)}): {_preview(keys)}"
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("wrong shape", wrong_shape),
                )
                if keys
            )
            + ". Check that the checkpoint and the model config are for the same architecture."
        )
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)


def _preview(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    torch.save(dict(payload), tmp)
    os.replace(tmp, target)
    return target
