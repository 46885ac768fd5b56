"""Fixtures of the latency tests: a private device-lock dir and the built-in tiny ViT."""

from __future__ import annotations

import pytest


@pytest.fixture
def private_lock_dir(tmp_path, monkeypatch):
    """Device locks under this test's tmp dir, so parallel test runs never wait on each other."""
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(scope="module")
def tiny():
    """The built-in ViT architecture with random weights, in eval mode (latency does not read weights)."""
    from vitsearch.evaluators.models import create_vitsearch_tiny

    return create_vitsearch_tiny().eval()


@pytest.fixture(scope="module")
def one_thread():
    """torch at one thread for the module: forward passes that only count ops do not oversubscribe busy CI cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
