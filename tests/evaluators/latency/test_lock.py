"""The per-device lock: re-entrant in a process, exclusive across threads and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

from vitsearch.evaluators.latency.lock import device_lock, device_lock_path
from vitsearch.spaces.errors import DeviceError

pytestmark = pytest.mark.usefixtures("private_lock_dir")


def test_lock_is_reentrant_and_excludes_other_threads():
    errors = []

    def other():
        try:
            with device_lock("cpu", timeout=0.2):
                pass
        except DeviceError as exc:
            errors.append(str(exc))

    with device_lock("cpu") as path, device_lock("cpu"):  # nested: no deadlock
        assert path == device_lock_path("cpu")
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "busy" in errors[0]


_CHILD = textwrap.dedent("""
    import json, sys, time
    import torch
    from torch import nn
    import vitsearch.evaluators.latency.measure as lat
    import vitsearch.evaluators.latency.timing.burst as burst

    intervals = []
    inner = burst._timed_burst
    def recording(*args, **kw):  # runs inside the device lock
        start = time.time()
        try:
            return inner(*args, **kw)
        finally:
            intervals.append((start, time.time()))
    burst._timed_burst = recording
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    print("ready", flush=True)
    sys.stdin.readline()
    lat.measure_latency(model, (1, 1, 28, 28), threads=1, warmup=2, min_runs=10**6,
                        max_runs=10**6, max_seconds=0.7)
    print(json.dumps(intervals[0]), flush=True)
""")


def test_lock_serialises_two_processes(tmp_path):
    """Two processes measure on "cpu" at once; their locked intervals must not overlap."""
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # release both together
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs)
    (a0, a1), (b0, b1) = (json.loads(out.strip().splitlines()[-1]) for out in outs)
    assert a1 - a0 >= 0.7 and b1 - b0 >= 0.7
    assert a1 <= b0 or b1 <= a0, f"overlap: {a0:.3f}-{a1:.3f} vs {b0:.3f}-{b1:.3f}"
