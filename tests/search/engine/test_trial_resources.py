"""The Ray resources of a trial: a CUDA study's trials ask for the GPU (Ray then makes it visible)."""

from __future__ import annotations

import pytest

from vitsearch.search.engine.resources import trial_resources
from vitsearch.spaces.errors import DeviceError


def test_cpu_study_asks_for_cpus_only():
    assert trial_resources("cpu", 2, 2, gpus_in_cluster=1, local=True) == {"cpu": 2}


def test_cuda_study_shares_the_local_gpu_and_takes_a_whole_one_on_a_cluster():
    assert trial_resources("cuda", 1, 2, gpus_in_cluster=1, local=True) == {"cpu": 1, "gpu": 0.5}
    assert trial_resources("cuda:0", 4, 1, gpus_in_cluster=2, local=True) == {"cpu": 4, "gpu": 1.0}
    assert trial_resources("cuda", 1, 8, gpus_in_cluster=4, local=False) == {"cpu": 1, "gpu": 1.0}


def test_cuda_study_on_a_cluster_without_gpus_is_one_clear_error():
    with pytest.raises(DeviceError, match=r"device: 'cuda' but the Ray cluster has no GPU"):
        trial_resources("cuda", 1, 1, gpus_in_cluster=0, local=False)
