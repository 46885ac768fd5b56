"""One inter-process lock per device, so two latency measurements never overlap.

The lock is a file lock (``filelock.FileLock``) under ``$VITSEARCH_LOCK_DIR``
(default ``<tempdir>/vitsearch-locks``); every process on the machine that measures
on the same device - Ray workers, the CLI, a second study - takes the same file.
A GPU's lock file is named after its UUID where torch reports one, so processes with
different ``CUDA_VISIBLE_DEVICES`` still agree on which physical GPU they lock. The
lock is re-entrant within one thread of one process (nested ``device_lock`` calls on
the same device do not deadlock) and serialises threads of one process too.

**Measurements go first.** Work on the device (distillation, accuracy) holds the lock
*shared* (:func:`device_busy`); a measurement takes it exclusively. A measurement first
takes the lock's *intent* file (``<lock>.intent``) exclusively: new work waits on it, and
work in progress steps aside at its next :func:`step_aside` (a distillation step) until the
measurement is done. Without the intent, a measurement polled for a moment when no other
worker held the lock at all; with two workers on one device it waited for the other's
whole distillation: the latency phase took 7.9-10.9 s on average, its median 1.5 s.

The OS releases the lock when its holder dies, so a crashed worker leaves no stale
lock behind. Processes on other machines are not coordinated unless the lock dir is on storage
they share and that storage supports file locks.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
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
#: this thread's shared holds, per lock file: (lock fd, intent fd)
_BUSY = threading.local()


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
    if str(path) in _held():
        raise DeviceError(f"device: {str(device)!r} is held for work by this thread (device_busy); a measurement "
                          "inside it would wait for itself: measure after the work")
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(path), FileLock(str(path)))
        intent = _LOCKS.setdefault(str(_intent(path)), FileLock(str(_intent(path))))
    start = time.monotonic()
    try:
        intent.acquire(timeout=-1 if timeout is None else timeout)  # new work waits; work in progress steps aside
        try:
            lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout - (time.monotonic() - start)))
        except BaseException:
            intent.release()
            raise
    except Timeout:
        raise DeviceError(
            f"device: {str(device)!r} stayed busy for {timeout} s (lock {str(path)!r} held by another "
            "measurement); wait for it to finish or raise the timeout"
        ) from None
    try:
        yield path
    finally:
        lock.release()
        intent.release()


def _intent(path: Path) -> Path:
    return path.with_name(path.name + ".intent")


def _held() -> dict[str, tuple[int, int]]:
    if not hasattr(_BUSY, "held"):
        _BUSY.held = {}
    return _BUSY.held


def _share(fd: int, intent_fd: int) -> None:
    """Take the shared lock once no measurement waits or runs (the intent is free)."""
    import fcntl

    fcntl.flock(intent_fd, fcntl.LOCK_SH)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # no writer holds it: a writer holds the intent first
    finally:
        fcntl.flock(intent_fd, fcntl.LOCK_UN)


def step_aside() -> None:
    """Between units of work inside :func:`device_busy`: when a measurement waits for the device, release the
    shared lock until it is done. One non-blocking ``flock`` otherwise; nothing outside ``device_busy``."""
    import fcntl

    for fd, intent_fd in list(_held().values()):
        try:
            fcntl.flock(intent_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a measurement holds the intent: let it have the device
            fcntl.flock(fd, fcntl.LOCK_UN)
            _share(fd, intent_fd)
        else:
            fcntl.flock(intent_fd, fcntl.LOCK_UN)


@contextmanager
def device_busy(device: str | torch.device) -> Iterator[Path]:
    """Hold a *shared* lock on ``device`` while doing non-timed work on it (accuracy, recovery).

    Any number of processes can hold it together; a latency measurement (the exclusive
    :func:`device_lock` on the same file, both ``flock``-based) goes first: new work waits
    while one waits or runs, and work in progress lets it in at its next :func:`step_aside`.
    No measurement overlaps a trial's computation on the same device. Re-entrant in a
    thread (an inner hold is the outer one); a measurement inside it is refused.
    """
    path = device_lock_path(device)
    held = _held()
    if str(path) in held:  # nested in this thread: the outer hold covers it (waiting here could deadlock)
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    intent_fd = os.open(_intent(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _share(fd, intent_fd)
        held[str(path)] = (fd, intent_fd)
        yield path
    finally:
        held.pop(str(path), None)
        os.close(fd)  # closing the descriptors drops the flocks
        os.close(intent_fd)
