"""Shared "busy" locks (trial computation) versus the exclusive measurement lock."""

import subprocess
import sys
import time

from vitsearch.evaluators.latency.lock import device_busy, device_lock

HOLD = """
import sys, time
from vitsearch.evaluators.latency.lock import device_busy
with device_busy("cpu"):
    print("held", flush=True)
    if sys.argv[1] == "stdin":  # hold until the test says so
        sys.stdin.readline()
    else:
        time.sleep(float(sys.argv[1]))
    print(time.time(), flush=True)  # still held: the lock is released after this instant
"""


def _holder(tmp_path, arg: str) -> subprocess.Popen:
    env = {**__import__("os").environ, "VITSEARCH_LOCK_DIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, arg], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_measurement_waits_for_other_processes_work(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    holder = _holder(tmp_path, "1.5")
    with device_lock("cpu"):
        acquired = time.time()
    last_held = float(holder.stdout.readline())
    holder.wait()
    # blocked until the other process's work was done: an order of events, not a duration (the
    # holder's stamp is taken inside its lock, so a holder preempted after releasing cannot fail it)
    assert acquired >= last_held


def test_busy_locks_are_shared(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    holder = _holder(tmp_path, "stdin")  # holds its shared lock until told
    got = threading.Event()

    def take() -> None:
        with device_busy("cpu"):
            got.set()

    try:
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        # two workers compute side by side: taken while the other still holds it (the wait only bounds a hang)
        assert got.wait(timeout=120)
        assert holder.poll() is None
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait()
