"""Shared fixtures: the built-in model and data are loaded once per test session; the tiny study file."""

from __future__ import annotations

import pytest
import torch
from tinystudy import TINY_STUDY, write_study


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


@pytest.fixture
def tiny_study(tmp_path):
    """``tiny_study(base=TINY_STUDY, file="study.yaml", **overrides) -> Path``: the study written under tmp_path.

    ``base`` and ``overrides`` as in ``tinystudy.tiny_study_dict``; ``file`` may name sub-folders.
    """

    def write(base=TINY_STUDY, file: str = "study.yaml", **overrides):
        return write_study(tmp_path / file, base, **overrides)

    return write
