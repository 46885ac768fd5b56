"""What the end-of-run summary counts, and the front table's rung and test columns (pure pandas)."""

from __future__ import annotations

import pandas as pd

from vitsearch.search.results.tables import counts_line, front_table, run_counts
from vitsearch.search.results.testacc import with_cached


def _frame() -> pd.DataFrame:
    rows = [  # number, state, reused_from, settled, rung, latency source, feasible
        (0, "COMPLETE", None, None, 0, "measured", True),
        (1, "COMPLETE", None, None, 2, "measured", True),
        (2, "COMPLETE", None, None, 1, "measured", False),
        (3, "PRUNED", None, "no gain", None, "measured", False),
        (4, "PRUNED", None, "cost budget", None, "predicted", False),
        (5, "COMPLETE", 1.0, None, 0, "measured", True),  # a reused duplicate: not evaluated
        (6, "FAIL", None, None, None, None, None),
        (7, "PRUNED", None, None, None, None, None),  # a duplicate of a config in flight
    ]
    return pd.DataFrame(rows, columns=["number", "state", "reused_from", "settled", "rung", "latency_source",
                                       "feasible"])


def test_run_counts_separate_evaluated_settled_reused():
    c = run_counts(_frame(), rungs=3)
    assert c["evaluated"] == 3 and c["reused"] == 1 and c["failed"] == 1 and c["duplicates_in_flight"] == 1
    assert c["settled_on_predicted_cost"] == 1 and c["settled_on_measured_cost"] == 1 and c["settled_no_gain"] == 1
    assert c["reached_rung"] == [3, 2, 1]
    line = counts_line(c, (10, 50, 150))
    assert "3 evaluated (3 at rung 0 (10 steps), 2 at rung 1 (50 steps), 1 at rung 2 (150 steps))" in line


def test_front_table_shows_rung_and_test_interval():
    front = pd.DataFrame([{"number": 4, "rung": 1, "accuracy": 0.98, "latency_ms": 1.5, "latency_source": "measured",
                           "size_mb": 4.0, "macs": 5e7, "summary": "depth 6"}])
    assert "test acc" not in front_table(front)
    cached = with_cached(front, {"4:1": {"test_accuracy": 0.986, "test_lo": 0.971, "test_hi": 0.993, "test_n": 500}})
    text = front_table(cached)
    assert "test acc [95% CI]" in text and "98.60% [97.1%, 99.3%]" in text and "    4     1   98.00%" in text
    assert with_cached(front, {"4:0": {"test_accuracy": 0.5}})["test_accuracy"].isna().all()  # another rung: not it
