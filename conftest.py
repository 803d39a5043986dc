"""Fixtures shared by the project's tests and the variants' gates (``branches/*/tests``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Run a test on one intra-op thread, then restore the count.

    The suite shares two cores with other jobs (a gate runs beside trainings): for the small
    convolutions in tests a second OpenMP thread mostly waits on a busy core.
    """
    import torch  # here, not at module level: orchestrator-only test runs stay light

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
