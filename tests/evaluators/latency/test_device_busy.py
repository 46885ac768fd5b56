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


STEPPER = """
import sys, time
from vitsearch.evaluators.latency.lock import device_busy, step_aside
with device_busy("cpu"):
    print("held", flush=True)
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:  # work in small units (distillation steps), stepping aside between them
        time.sleep(0.01)
        step_aside()
"""

MEASURER = """
import time
from vitsearch.evaluators.latency.lock import device_lock
with device_lock("cpu", timeout=120):
    print(time.time(), flush=True)
"""


def _intent_waiting(tmp_path) -> bool:
    """Whether a measurement holds the device's intent (it waits for the device, or measures)."""
    import fcntl
    import os

    fd = os.open(tmp_path / "cpu.lock.intent", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 120  # bounds a hang only
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_measurement_goes_before_work_that_steps_aside(tmp_path, monkeypatch):
    """Two workers on one device: a measurement used to wait for the other's whole distillation."""
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    env = {**__import__("os").environ, "VITSEARCH_LOCK_DIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", STEPPER, "600"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with device_lock("cpu", timeout=120):  # before the change: DeviceError after 120 s
            assert holder.poll() is None  # its work is still in progress: it stepped aside
    finally:
        holder.kill()
        holder.wait()


def test_new_work_waits_while_a_measurement_waits(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    holder = _holder(tmp_path, "stdin")  # work that never steps aside: the measurement waits for its end
    order: list[str] = []

    def measured() -> None:
        with device_lock("cpu", timeout=120):
            order.append("measured")

    def work() -> None:
        with device_busy("cpu"):
            order.append("work")

    measure = threading.Thread(target=measured, daemon=True)
    measure.start()
    _until(lambda: _intent_waiting(tmp_path), "the measurement never announced itself")
    late = threading.Thread(target=work, daemon=True)
    late.start()
    late.join(timeout=0.5)
    assert late.is_alive() and order == []  # new work queues behind the waiting measurement
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.wait()
    measure.join(timeout=120)
    late.join(timeout=120)
    assert order == ["measured", "work"]


def test_nested_work_does_not_wait_and_a_measurement_inside_work_is_refused(tmp_path, monkeypatch):
    import pytest

    from vitsearch.evaluators.latency.lock import step_aside
    from vitsearch.spaces.errors import DeviceError

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path))
    env = {**__import__("os").environ, "VITSEARCH_LOCK_DIR": str(tmp_path)}
    with device_busy("cpu"):
        other = subprocess.Popen([sys.executable, "-c", MEASURER], stdout=subprocess.PIPE, text=True, env=env)
        try:
            _until(lambda: _intent_waiting(tmp_path), "the other process's measurement never announced itself")
            with device_busy("cpu"):  # the outer hold covers it; waiting here would deadlock
                pass
            with pytest.raises(DeviceError, match="held for work by this thread"):
                with device_lock("cpu", timeout=1):
                    pass
            step_aside()  # the other process measures now; back once it is done
            assert other.wait(timeout=120) == 0 and float(other.stdout.readline()) > 0
        finally:
            if other.poll() is None:
                other.kill()
                other.wait()
