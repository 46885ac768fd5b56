"""One inter-process lock per device, so two latency measurements never overlap.

The lock is a file lock (``filelock.FileLock``) under ``$VITSEARCH_LOCK_DIR``
(default ``<tempdir>/vitsearch-locks``); every process on the machine that measures
on the same device - Ray workers, the CLI, a second study - takes the same file.
A GPU's lock file is named after its UUID where torch reports one, so processes with
different ``CUDA_VISIBLE_DEVICES`` still agree on which physical GPU they lock. The
lock is re-entrant within one thread of one process (nested ``device_lock`` calls on
the same device do not deadlock) and serialises threads of one process too.

The OS releases the lock when its holder dies, so a crashed worker leaves no stale
lock behind. Processes on other machines are not coordinated unless the lock dir is on storage
they share and that storage supports file locks.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from vitsearch.spaces.errors import DeviceError

from vitsearch.evaluators.latency.fingerprint import resolve_device

LOCK_DIR_ENV = "VITSEARCH_LOCK_DIR"

# One FileLock object per path in this process: FileLock counts re-entrant acquires
# per object, whereas two objects on one path would deadlock the second acquire.
_LOCKS: dict[str, object] = {}
_LOCKS_GUARD = threading.Lock()


def lock_dir() -> Path:
    """Directory of the device lock files (``$VITSEARCH_LOCK_DIR`` or the default)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "vitsearch-locks")


def device_lock_path(device: str | torch.device) -> Path:
    """Path of the lock file guarding ``device``."""
    dev = resolve_device(device)
    key = "cpu"
    if dev.type == "cuda":
        uuid = getattr(torch.cuda.get_device_properties(dev.index), "uuid", None)
        key = f"cuda-{uuid}" if uuid is not None else f"cuda-{dev.index}"
    return lock_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".lock")


@contextmanager
def device_lock(device: str | torch.device, timeout: float | None = None) -> Iterator[Path]:
    """Hold ``device``'s inter-process lock for the body of the ``with``.

    ``timeout`` in seconds (None waits for ever); on timeout a :class:`DeviceError`
    says which lock file is busy. Yields the lock file's path.
    """
    from filelock import FileLock, Timeout

    path = device_lock_path(device)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(
            f"{LOCK_DIR_ENV}: cannot create the lock directory {str(path.parent)!r} ({exc.strerror}); "
            f"set {LOCK_DIR_ENV} to a writable directory"
        ) from None
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(path), FileLock(str(path)))
    try:
        lock.acquire(timeout=-1 if timeout is None else timeout)
    except Timeout:
        raise DeviceError(
            f"device: {str(device)!r} stayed busy for {timeout} s (lock {str(path)!r} held by another "
            "measurement); wait for it to finish or raise the timeout"
        ) from None
    try:
        yield path
    finally:
        lock.release()


@contextmanager
def device_busy(device: str | torch.device) -> Iterator[Path]:
    """Hold a *shared* lock on ``device`` while doing non-timed work on it (accuracy, recovery).

    Any number of processes can hold it together; a latency measurement (the exclusive
    :func:`device_lock` on the same file, both ``flock``-based) waits until none holds
    it, and work waits while a measurement runs, so no measurement overlaps a trial's
    computation on the same device. Not re-entrant with :func:`device_lock` in one
    process: release it before measuring.
    """
    import fcntl

    path = device_lock_path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield path
    finally:
        os.close(fd)  # closing the descriptor drops the flock
