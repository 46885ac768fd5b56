"""Device names as studies and the CLI give them: ``cpu``, ``cuda``, ``cuda:N``, ``auto``."""

from __future__ import annotations

import torch

from vitsearch.spaces.errors import DeviceError

ACCEPTED = "cpu, cuda, cuda:N or auto"


def resolve_device(name: str) -> torch.device:
    """The torch device a name stands for; a device that is not present is a DeviceError."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = 0 if name == "cuda" else name.partition(":")[2]
        if not str(index).isdigit():
            raise DeviceError(f"device: {name!r} is not a device name; use {ACCEPTED}")
        if not torch.cuda.is_available():
            raise DeviceError(f"device: {name!r} requested but CUDA is not available on this machine; use cpu (or auto)")
        if int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device: {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are present")
        return torch.device(f"cuda:{int(index)}")
    raise DeviceError(f"device: {name!r} is not a device name; use {ACCEPTED}")
