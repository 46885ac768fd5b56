"""What one Ray trial of a study asks for: its CPUs, and on a CUDA study its share of a GPU.

Ray makes a GPU visible to a trial (``CUDA_VISIBLE_DEVICES``) only when the trial asks for
one; a CUDA study's trials without a GPU request would run where Ray hides the device, or
queue forever on a cluster without GPUs. Locally the study's GPU is shared by its workers
(each asks ``gpus / workers``; the device lock still times one at a time); on a cluster
each worker asks for a whole GPU.
"""

from __future__ import annotations

from vitsearch.spaces.errors import DeviceError


def trial_resources(device: str, cpus: int, workers: int, gpus_in_cluster: float, local: bool) -> dict[str, float]:
    """Ray resources for one trial of a study on ``device`` ('cpu', 'cuda', 'cuda:N').

    ``gpus_in_cluster``: ``ray.cluster_resources().get("GPU", 0)``. DeviceError (one line)
    when the study runs on CUDA and Ray sees no GPU.
    """
    out: dict[str, float] = {"cpu": cpus}
    if not str(device).startswith("cuda"):
        return out
    if gpus_in_cluster <= 0:
        raise DeviceError(f"device: {device!r} but the Ray cluster has no GPU resource; start Ray on a machine with "
                          "a visible GPU (ray start --num-gpus N), or set device: cpu")
    out["gpu"] = min(1.0, gpus_in_cluster / workers) if local else 1.0
    return out
