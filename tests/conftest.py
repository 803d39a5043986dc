"""Session-wide test settings: no test writes outside its tmp dirs, and torch stays small."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    # The latent cache and the hub cache default to the user's home: point them at tmp.
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ORCH_CACHE_DIR", str(root / "orch-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def pytest_configure(config):
    # Two cores are shared by the whole suite; more threads than cores only thrash.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
