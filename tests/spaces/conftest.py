"""Fixtures for the spaces tests: small random ViTs of two timm architectures."""

from __future__ import annotations

import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*register_constant.*")

@pytest.fixture(autouse=True)
def _one_thread():
    # These tests time nothing; on a 2-core machine shared with other work, 2 torch threads
    # thrash (measured: 13 s idle vs 270 s under load for this folder), 1 thread does not.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    """The built-in architecture with seeded random weights (no training needed)."""
    from vitsearch.evaluators.models import create_vitsearch_tiny

    torch.manual_seed(0)
    return create_vitsearch_tiny().eval()


@pytest.fixture(scope="session")
def tiny_input():
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def deit():
    """timm deit_tiny_patch16_224 without weights (no network here)."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="session")
def deit_input():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))


@pytest.fixture(params=["tiny", "deit"])
def arch(request):
    """(model, input) for each of the two architectures."""
    return request.getfixturevalue(request.param), request.getfixturevalue(f"{request.param}_input")


@pytest.fixture(scope="session")
def trained():
    """The trained built-in model and mnist5k, or skip when the weights are not built yet."""
    from vitsearch.evaluators.models import ModelSpec, builtin_weights_path, load_base_model

    if not builtin_weights_path().is_file():
        pytest.skip(f"trained weights absent ({builtin_weights_path()})")
    from vitsearch.evaluators.data import load_mnist5k

    return load_base_model(ModelSpec()), load_mnist5k(seed=0)
