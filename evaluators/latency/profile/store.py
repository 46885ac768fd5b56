"""A profile dir's table: parquet part files, one row per measurement with every raw pass time.

``timings/part-*.parquet`` (or another sub-dir, e.g. ``eval/...`` for predictor-eval):
each chunk of rows is written as its own file as soon as it is measured (atomic rename),
so a killed profile keeps what it measured and a restart skips those keys.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class ProfileStore:
    """The parquet part files of one profile dir (append-only, one file per chunk)."""

    def __init__(self, root: str | Path, sub: str = "timings") -> None:
        self.root = Path(root)
        self.dir = self.root / sub

    def rows(self) -> list[dict]:
        """Every row measured so far."""
        import pandas as pd

        files = sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []
        if not files:
            return []
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).to_dict("records")

    def append(self, rows: list[dict]) -> None:
        """Write ``rows`` as a new part file (atomic rename: never a half-written part)."""
        import pandas as pd

        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.dir.glob("part-*.parquet")))
        path = self.dir / f"part-{n:05d}-{os.getpid()}-{time.time_ns() % 10**9}.parquet"
        tmp = path.with_suffix(".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(path)


def row(kind: str, key: str, samples: list[float], fingerprint: dict, phase: str, **extra: Any) -> dict:
    """One measurement row: statistics and every raw sample, with the fingerprint and load."""
    import numpy as np

    arr = np.asarray(samples)
    return {"kind": kind, "key": key, "phase": phase, "median_ms": float(np.median(arr)),
            "p10_ms": float(np.percentile(arr, 10)), "p90_ms": float(np.percentile(arr, 90)),
            "n_runs": len(samples), "samples_ms": [float(s) for s in samples],
            "load_avg_1m": round(os.getloadavg()[0], 2), "fingerprint_id": fingerprint["fingerprint_id"],
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


def model_row(config: Any, r: Any, fingerprint: dict, phase: str, **extra: Any) -> dict:
    """A profile row for one interleaved measurement (:class:`..timing.results.InterleavedResult`).

    ``extra``: the runtime and its version, and the program's build seconds (not latency).
    """
    out = row("model", config.to_json(sort_keys=True), r.samples["candidate"], fingerprint, phase,
              summary=config.summary(), ratio=r.ratio, ratio_low=r.ci_low, ratio_high=r.ci_high,
              ref_median_ms=r.reference_ms_now, ref_samples_ms=[float(v) for v in r.samples["reference"]],
              chunks=r.chunks, stop_reason=r.stop_reason, protocol=r.protocol, seconds=r.seconds,
              timing_nice=(r.thread_info.get("timing_thread") or {}).get("nice"), **extra)
    return out
