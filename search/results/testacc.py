"""Accuracy on the held-out test split, for the candidates a search chose.

The search selects on val; the front, the report and ``pick`` show accuracy re-measured
on the test split, which no worker ever received, with a 95 % Wilson interval. A
candidate is rebuilt at the highest rung it reached: from its checkpoint in
``RUN/rungs/`` (``torch.load(weights_only=True)``) when present, else by replaying its
rungs' distillation exactly (seeded). Results are cached in ``RUN/test_accuracy.json`` by
(trial, rung), so ``vitsearch list``, ``report`` and ``pick`` agree without re-measuring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

CACHE_FILE = "test_accuracy.json"
RUNG_DIR = "rungs"


def checkpoint_path(run_dir: Path, number: int, rung: int) -> Path:
    """Where the search keeps trial ``number``'s weights at ``rung``."""
    return Path(run_dir) / RUNG_DIR / f"trial-{number}-rung-{rung}.pt"


def rebuild_prepared(session, config, rung: int, run_dir: Path | None = None, number: int | None = None):
    """The prepared float model of ``config`` at ``rung`` of the study's ladder, as the search built it."""
    from vitsearch.evaluators.distill import distilled_chain, load_prepared

    if run_dir is not None and number is not None and (path := checkpoint_path(run_dir, number, rung)).is_file():
        return load_prepared(session.base, config, path, session.data.calibration, session.device)
    rc = session.spec.recovery
    rungs = (0,) if config.is_identity() else rc.ladder[:rung + 1]  # the search never distils the teacher itself
    return distilled_chain(session.base, config, session.data.train, rungs=rungs,
                           calibration=session.data.calibration, **session.distill_kwargs())


def measure_test(session, model) -> dict[str, Any]:
    """Top-1 of ``model`` on the session's test split, with its 95 % Wilson interval."""
    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.accuracy import wilson_interval

    acc = evaluate_accuracy(model, session.data.test, session.device, session.spec.data.eval_batch_size,
                            source=f"test split of {session.data.name}")
    lo, hi = wilson_interval(acc.top1, acc.n)
    return {"test_accuracy": acc.top1, "test_lo": lo, "test_hi": hi, "test_n": acc.n,
            "test_source": session.data.test_source}


def front_test_accuracy(session, run_dir: Path, front: pd.DataFrame) -> pd.DataFrame:
    """``front`` with test_accuracy / test_lo / test_hi / test_n, measured where not cached yet."""
    from vitsearch.search.results.rundir import write_atomic
    from vitsearch.spaces import CompressionConfig, finalize

    cache = read_cache(run_dir)
    fresh = False
    for _, r in front.iterrows():
        key = f"{int(r['number'])}:{int(r['rung'])}"
        if key not in cache:
            config = CompressionConfig.from_dict(json.loads(r["config"]))
            prepared = rebuild_prepared(session, config, int(r["rung"]), run_dir, int(r["number"]))
            cache[key] = measure_test(session, finalize(prepared, config, device=str(session.device)))
            fresh = True
    if fresh:
        write_atomic(Path(run_dir) / CACHE_FILE, json.dumps(cache, indent=1))
    return with_cached(front, cache)


def read_cache(run_dir: Path) -> dict[str, dict]:
    """The run's cached test accuracies by "trial:rung" (empty when none)."""
    path = Path(run_dir) / CACHE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def with_cached(front: pd.DataFrame, cache: dict[str, dict]) -> pd.DataFrame:
    """``front`` with the cached test columns (NaN where not measured)."""
    out = front.copy()
    cols = ("test_accuracy", "test_lo", "test_hi", "test_n")
    keys = [f"{int(n)}:{int(k)}" if pd.notna(k) else "" for n, k in zip(out["number"], out["rung"])]
    for col in cols:
        out[col] = [cache.get(key, {}).get(col, float("nan")) for key in keys]
    return out
