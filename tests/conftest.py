"""Shared fixtures: the built-in model and data are loaded once per test session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _fixed_threads():
    # CI machines have 2 cores; pin torch so timings and results do not depend on the host.
    torch.set_num_threads(2)


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
