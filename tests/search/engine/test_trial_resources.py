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


def test_cuda_n_is_the_nth_gpu_this_process_sees():
    from vitsearch.search.engine.resources import physical_gpu

    assert physical_gpu("cpu", "0,1") is None
    assert physical_gpu("cuda", None) == "0" and physical_gpu("cuda:1", "") == "1"
    assert physical_gpu("cuda:1", "2, 3") == "3"  # an index into what CUDA_VISIBLE_DEVICES shows
    assert physical_gpu("cuda:0", "GPU-8f2c") == "GPU-8f2c"
    with pytest.raises(DeviceError, match=r"device: 'cuda:2' is not present; CUDA_VISIBLE_DEVICES=2,3 shows "
                                          r"cuda:0..cuda:1"):
        physical_gpu("cuda:2", "2,3")


def test_a_trial_runs_on_its_own_gpu_as_cuda_0():
    from vitsearch.search.engine.resources import worker_device

    assert worker_device("cuda:1", ["1"]) == "cuda:0" and worker_device("cuda", ["0"]) == "cuda:0"
    assert worker_device("cpu", []) == "cpu" and worker_device("cuda:1", []) == "cuda:1"


def test_a_local_ray_of_a_cuda_study_hands_out_only_the_study_gpu():
    """Real Ray (a fresh process): started for cuda:1 of GPUs "4,7", its one GPU is 7, shown to a trial alone."""
    import json
    import subprocess
    import sys

    script = (
        "import json, os, ray\n"
        "from vitsearch.search.engine.raylocal import init_local\n"
        "from vitsearch.search.engine.resources import physical_gpu\n"
        "init_local(1, gpu=physical_gpu('cuda:1', os.environ['CUDA_VISIBLE_DEVICES']), include_dashboard=False)\n"
        "@ray.remote(num_gpus=1, num_cpus=0)\n"
        "def seen():\n"
        "    return os.environ.get('CUDA_VISIBLE_DEVICES'), [str(i) for i in ray.get_gpu_ids()]\n"
        "out = {'gpus': ray.cluster_resources().get('GPU'), 'trial': ray.get(seen.remote(), timeout=60),\n"
        "       'driver_env': os.environ.get('CUDA_VISIBLE_DEVICES')}\n"
        "ray.shutdown()\n"
        "print(json.dumps(out))\n")
    env = {**__import__("os").environ, "CUDA_VISIBLE_DEVICES": "4,7", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["gpus"] == 1.0 and out["trial"] == ["7", ["7"]]
    assert out["driver_env"] == "4,7"  # restored for the driver
