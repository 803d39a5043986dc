"""On-disk cache of what frozen networks compute from the training clips.

A frozen tokenizer gives the same latents for a clip every epoch, so they are computed once
and reused, by every epoch, every rerun and every worktree (the cache lives outside the
worktrees: ``$ORCH_CACHE_DIR``, default ``~/.cache/orch``). The same holds for frozen motion
features.

Keys: a namespace is the hash of everything that decides the values: the producer (e.g. the
tokenizer checkpoint's content hash), the data config and the context length, the source of
the code that renders the clips and computes the entries (``shared.provenance.code_digest``),
torch's version, and the precision computed in when it is not fp32. Each entry is
one clip: a file named by its index that also records the namespace key and the index, so an
entry from another producer, another data config or another clip is never used: it is
recomputed and overwritten. A torn or unreadable file counts as missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

CACHE_FORMAT = 1


def default_cache_root() -> Path:
    configured = os.environ.get("ORCH_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orch"


def stable_hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ClipCache:
    """Per-clip tensors under ``root/<kind>/<namespace hash>/<index>.pt``."""

    def __init__(self, root: Path, *, kind: str, key: dict[str, Any]) -> None:
        self.root = Path(root)
        self.kind = kind
        self.key = {"format": CACHE_FORMAT, "kind": kind, **key}
        self.key_hash = stable_hash(self.key)
        self.directory = Path(root) / kind / self.key_hash[:24]
        self.hits = 0
        self.misses = 0

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:08d}.pt"

    def get(self, index: int) -> dict[str, torch.Tensor] | None:
        path = self._path(index)
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - a torn or foreign file is a miss, never an error
            return None
        if (
            not isinstance(entry, dict)
            or entry.get("key_hash") != self.key_hash
            or entry.get("index") != index
            or not isinstance(entry.get("tensors"), dict)
        ):
            return None
        return entry["tensors"]

    def put(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(index)
        # Unique temp name: several worktrees may fill the same cache at once.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        payload = {
            "key_hash": self.key_hash,
            "index": index,
            "tensors": {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
        }
        torch.save(payload, tmp)
        os.replace(tmp, path)
        if not (self.directory / "key.json").exists():
            (self.directory / "key.json").write_text(json.dumps(self.key, indent=2, default=str))

    def keyed(self, **extra: Any) -> ClipCache:
        """The cache of entries that also depend on ``extra`` (e.g. the precision computed in)."""
        return ClipCache(self.root, kind=self.kind, key={
            k: v for k, v in self.key.items() if k not in ("format", "kind")} | extra)

    def load_all(
        self,
        indices: Sequence[int],
        compute: Callable[[list[list[int]]], Iterable[list[dict[str, torch.Tensor]]]],
        *,
        batch_size: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Entries for ``indices``, computing and storing the missing ones. ``compute`` gets
        the missing indices cut into batches of ``batch_size`` and yields each batch's
        entries in order (so it can make the batches ahead, e.g. in DataLoader workers)."""
        entries: dict[int, dict[str, torch.Tensor]] = {}
        missing = []
        for index in indices:
            entry = self.get(index)
            if entry is None:
                missing.append(index)
            else:
                entries[index] = entry
        self.hits += len(entries)
        self.misses += len(missing)
        chunks = [missing[start : start + batch_size]
                  for start in range(0, len(missing), batch_size)]
        done = 0
        for chunk, computed in zip(chunks, compute(chunks), strict=True):
            for index, tensors in zip(chunk, computed, strict=True):
                self.put(index, tensors)
                entries[index] = tensors
            done += len(chunk)
            if on_batch:
                on_batch(done, len(missing))
        return [entries[index] for index in indices]
