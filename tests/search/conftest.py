"""Fixtures for the core-library tests in this folder."""

from __future__ import annotations

import pytest
import torch

from mpsctl.quant import fused


@pytest.fixture(autouse=True)
def _fast_eager_core():
    """Run on the eager quantizer bodies with one torch thread, and restore both afterwards.

    torch.compile specialises on every new shape (minutes over this suite, then it hits the
    recompile limit); the compiled bodies have their own equivalence test. Tensors here are
    tiny: one thread is as fast, and several pytest workers do not oversubscribe the cores.
    """
    was_fused, threads = fused.fused_enabled(), torch.get_num_threads()
    fused.set_fused(False)
    torch.set_num_threads(1)
    yield
    fused.set_fused(was_fused)
    torch.set_num_threads(threads)
