"""The clip cache: computed once, shared, and never wrong."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from shared.latent_cache import ClipCache


def _compute_counter():
    calls: list[list[int]] = []

    def compute(chunks: list[list[int]]) -> Iterator[list[dict[str, torch.Tensor]]]:
        for indices in chunks:
            calls.append(list(indices))
            yield [{"value": torch.full((2, 3), float(i))} for i in indices]

    return compute, calls


def test_entries_are_computed_once_and_reused_by_a_second_cache(tmp_path):
    compute, calls = _compute_counter()
    key = {"tokenizer": "abc", "data": {"seed": 0}}
    first = ClipCache(tmp_path, kind="latents", key=key)
    entries = first.load_all(range(5), compute, batch_size=2)
    assert [e["value"][0, 0].item() for e in entries] == [0, 1, 2, 3, 4]
    assert calls == [[0, 1], [2, 3], [4]] and first.misses == 5

    again = ClipCache(tmp_path, kind="latents", key=dict(key))  # another worktree, same key
    entries = again.load_all(range(5), compute, batch_size=2)
    assert len(calls) == 3 and again.hits == 5 and again.misses == 0
    assert torch.equal(entries[3]["value"], torch.full((2, 3), 3.0))


def test_other_key_gets_its_own_entries(tmp_path):
    compute, calls = _compute_counter()
    ClipCache(tmp_path, kind="latents", key={"tokenizer": "a"}).load_all([0], compute, batch_size=4)
    other = ClipCache(tmp_path, kind="latents", key={"tokenizer": "b"})
    assert other.get(0) is None
    other.load_all([0], compute, batch_size=4)
    assert len(calls) == 2


def test_a_stale_or_foreign_entry_is_never_used(tmp_path):
    compute, calls = _compute_counter()
    cache = ClipCache(tmp_path, kind="latents", key={"tokenizer": "a"})
    cache.load_all([0, 1], compute, batch_size=4)
    # An entry of clip 0 copied over clip 1's file (wrong index), and a file from another key.
    (cache.directory / "00000001.pt").write_bytes((cache.directory / "00000000.pt").read_bytes())
    foreign = ClipCache(tmp_path, kind="latents", key={"tokenizer": "z"})
    foreign.put(0, {"value": torch.zeros(1)})
    (cache.directory / "00000000.pt").write_bytes((foreign.directory / "00000000.pt").read_bytes())
    assert cache.get(0) is None and cache.get(1) is None
    entries = cache.load_all([0, 1], compute, batch_size=4)
    assert [e["value"][0, 0].item() for e in entries] == [0, 1]
    assert cache.get(1)["value"][0, 0].item() == 1  # repaired on disk


def test_a_torn_file_counts_as_missing(tmp_path):
    compute, _ = _compute_counter()
    cache = ClipCache(tmp_path, kind="latents", key={"tokenizer": "a"})
    cache.load_all([0], compute, batch_size=1)
    path = cache.directory / "00000000.pt"
    path.write_bytes(path.read_bytes()[:20])
    assert cache.get(0) is None
