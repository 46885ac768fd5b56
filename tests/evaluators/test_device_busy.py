"""Shared "busy" locks (trial computation) versus the exclusive measurement lock."""

import subprocess
import sys
import time

import torch

from vitsearch.evaluators.latency.devicelock import device_busy, device_lock

HOLD = """
import sys, time
from vitsearch.evaluators.latency.devicelock import device_busy
with device_busy("cpu"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_measurement_waits_for_other_processes_work(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "1.5"], stdout=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "VITSEARCH_LOCK_DIR": str(tmp_path)})
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with device_lock("cpu"):
        waited = time.monotonic() - start
    holder.wait()
    assert waited > 0.8  # blocked until the other process's work was done


def test_busy_locks_are_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    env = {**__import__("os").environ, "VITSEARCH_LOCK_DIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "3"], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    start = time.monotonic()
    with device_busy("cpu"):
        assert time.monotonic() - start < 1.0  # two workers compute side by side
    holder.kill()
    holder.wait()
