"""Thread hygiene of a measurement: every thread's nice value and policy, the timing thread named."""

from __future__ import annotations

import os
import threading

from vitsearch.evaluators.latency.timing.hygiene import short, thread_report


def test_thread_report_sees_a_niced_thread():
    out = {}

    def work():
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)  # this thread only
        out["report"] = thread_report()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    rep = out["report"]
    assert rep["timing_thread"]["nice"] == 5 and rep["timing_thread"]["policy"] == "SCHED_OTHER"
    assert any("niced to 5" in w for w in rep["warnings"]) and "WARNING" in short(rep)
    assert thread_report()["timing_thread"]["nice"] == os.getpriority(os.PRIO_PROCESS, 0)  # this thread untouched
