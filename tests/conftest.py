"""Shared fixtures: the built-in model and data are loaded once per test session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _fixed_threads():
    # One thread: the suite also starts Ray workers and CLI subprocesses on a 2-core box,
    # and oversubscribed torch threads slow everything down many times over.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mnist():
    from vitsearch.evaluators.data import load_mnist5k

    return load_mnist5k(seed=0)


@pytest.fixture(scope="session")
def builtin_model():
    from vitsearch.evaluators.models import ModelSpec, load_base_model

    return load_base_model(ModelSpec())


@pytest.fixture
def builtin_model_copy(builtin_model):
    import copy

    return copy.deepcopy(builtin_model)
