"""Intervals that include the run's own sitting-to-sitting spread.

A run with no device profile estimates how far a ratio moves between sittings by timing
its earliest candidates again at its end (:mod:`vitsearch.search.engine.repeats`, kept in
``summary.json`` under ``sitting``); every interval read back from the run includes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitsearch.evaluators.latency.stats import predictive


def read_summary(run_path: Path) -> dict[str, Any]:
    """A run's summary.json ({} while the run has not finished once, or when it is unreadable)."""
    try:
        data = json.loads((Path(run_path) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_sitting_sd(summary: dict[str, Any]) -> float | None:
    """The spread a run measured itself (None when it did not: a profile's, or too few pairs)."""
    sd = (summary.get("sitting") or {}).get("sitting_sd")
    return None if sd is None else float(sd)


def widen_frame(frame, sd: float | None, confidence_default: float = 0.95):
    """A trials/front frame whose measured rows' ms intervals say where a re-measurement in another sitting
    falls: widened by the spread ``sd`` and the re-measurement's own noise (a copy; predicted rows and rows
    with no interval are left as they are; so is everything when no spread was measured)."""
    if sd is None or frame.empty or "latency_low_ms" not in frame:
        return frame
    out = frame.copy()
    for i, r in out.iterrows():
        lo, hi, ms = r.get("latency_low_ms"), r.get("latency_high_ms"), r.get("latency_ms")
        if r.get("latency_source") != "measured" or any(v is None or v != v for v in (lo, hi, ms)):
            continue
        if r.get("latency_sitting_sd") == r.get("latency_sitting_sd") and r.get("latency_sitting_sd") is not None:
            continue
        conf = r.get("latency_confidence")
        out.at[i, "latency_low_ms"], out.at[i, "latency_high_ms"] = predictive(
            ms, lo, hi, sd, conf if conf == conf and conf else confidence_default)
    return out


def sitting_line(sitting: dict[str, Any] | None) -> str:
    """One line under a run's front: what its latency intervals include."""
    if not sitting:
        return "latency intervals: as the study's protocol states them (a device profile's spread, or predicted)"
    sd, cov = sitting.get("sitting_sd"), sitting.get("coverage") or {}
    if sd is None:
        return f"latency intervals: this sitting's alone; the spread between sittings was {sitting['how']}"
    return (f"latency intervals: where a re-measurement in another sitting falls, with the spread between "
            f"sittings this run measured, {100 * sd:.1f} % ({sitting['how']}); of those {cov.get('n')}, "
            f"{cov.get('within_stated')} fell inside the first interval as measured (one sitting's alone), "
            f"{cov.get('within_widened')} inside it as stated")


def spread_source(summary: dict[str, Any]) -> str:
    """Where the spread between sittings that widens a run's measured intervals comes from, in words."""
    sitting = summary.get("sitting")
    if not sitting:
        return "the device profile's, when one was measured; else none: intervals are one sitting's alone"
    sd = sitting.get("sitting_sd")
    if sd is None:
        return f"not known: the run's own estimate was {sitting['how']}"
    return (f"{100 * sd:.1f} %, measured by the run itself: {sitting['how']}; with the re-measurement's own noise, "
            "the interval is where a re-measurement in another sitting falls")
