"""The local Ray instance of a run: bound to loopback, and its leftovers reaped after a killed driver.

Ray binds its GCS, raylet, object manager, agents and workers to the node IP address;
left alone it picks the machine's outward address and listens on all interfaces. A
local run (no ``--address``) needs none of that: :func:`init_local` starts Ray with
the node IP 127.0.0.1 and Ray's cluster mode off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
which is what stops Ray from replacing 127.0.0.1 by the outward address), so every
listening socket is on loopback.

A driver killed with SIGKILL cannot stop its Ray processes. The session folder of the
instance is recorded in the run dir's lock file; the next driver to lock that run dir
(``--resume``) kills the processes that still write into that session folder - only
those, identified by their open files, never by name.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("vitsearch.run")

LOOPBACK = "127.0.0.1"
#: Ray's switch for multi-host mode; "0" keeps every address it resolves on loopback
CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only():
    """Ray's cluster mode off for this process and the Ray processes it starts, then restored."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(CLUSTER_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[CLUSTER_ENV] = "0"  # inherited by GCS, raylet, agents and, through the raylet, the workers
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: a driver may have imported Ray already
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(CLUSTER_ENV, None)
        else:
            os.environ[CLUSTER_ENV] = before_env


def init_local(num_cpus: int, gpu: str | None = None, **kwargs) -> str:
    """Start a fresh local Ray on 127.0.0.1; returns its session folder.

    ``gpu``: the one ``CUDA_VISIBLE_DEVICES`` entry the Ray processes see (a CUDA study's
    device, :func:`.resources.physical_gpu`); None: what this process sees.
    """
    import ray

    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu is not None:  # inherited by the raylet, which detects and hands out only this GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        with _loopback_only():
            ray.init(address="local", num_cpus=num_cpus, num_gpus=None if gpu is None else 1,
                     _node_ip_address=LOOPBACK, **kwargs)
    finally:
        if gpu is not None:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
    return session_dir()


def session_dir() -> str | None:
    """The session folder of the Ray instance this process is connected to (None when not started here)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return node.get_session_dir_path() if node is not None else None


def session_processes(session: str) -> list[int]:
    """PIDs of live processes (not this one) with a file open under ``session`` - Ray's own log files."""
    prefix = str(Path(session)) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix):
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return found


def reap(session: str | None) -> int:
    """SIGKILL the processes a dead driver's Ray session left running; returns how many."""
    if not session or not os.path.isdir("/proc") or not Path(session).is_dir():
        return 0
    pids = session_processes(session)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
    if pids:
        log.info("reaped %d Ray process(es) left by a killed driver (session %s): %s", len(pids), session, pids)
    return len(pids)
