"""What one Ray trial of a study asks for: its CPUs, and on a CUDA study its share of a GPU.

Ray makes a GPU visible to a trial (``CUDA_VISIBLE_DEVICES``) only when the trial asks for
one; a CUDA study's trials without a GPU request would run where Ray hides the device, or
queue forever on a cluster without GPUs. Locally the study's GPU is shared by its workers
(each asks ``gpus / workers``; the device lock still times one at a time); on a cluster
each worker asks for a whole GPU.

Which GPU: a local Ray is started seeing only the study's device (``cuda:N`` is the N-th
GPU this process sees, :func:`physical_gpu`), so every trial gets that one; inside a
trial Ray shows its GPU alone, as ``cuda:0`` (:func:`worker_device`), locally and on a
cluster alike. The device fingerprint names the GPU by model, memory and driver, not
by index, so the driver's ``cuda:N`` and a worker's ``cuda:0`` are one device.
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


def physical_gpu(device: str, visible: str | None) -> str | None:
    """The ``CUDA_VISIBLE_DEVICES`` entry a local Ray should see for a study on ``device`` (None: not CUDA).

    ``visible``: this process's ``CUDA_VISIBLE_DEVICES`` (None or empty: every GPU, by index).
    ``cuda`` alone is index 0, as torch's current device is unless told otherwise.
    """
    dev = str(device)
    if not dev.startswith("cuda"):
        return None
    index = int(dev.split(":", 1)[1]) if ":" in dev else 0
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if not entries:
        return str(index)
    if index >= len(entries):
        raise DeviceError(f"device: {device!r} is not present; CUDA_VISIBLE_DEVICES={visible} shows "
                          f"cuda:0..cuda:{len(entries) - 1}")
    return entries[index]


def worker_device(device: str, gpu_ids: list) -> str:
    """The device a Ray trial runs a study on ``device`` on: its GPU is the only one it sees (``cuda:0``)."""
    return "cuda:0" if str(device).startswith("cuda") and gpu_ids else str(device)
