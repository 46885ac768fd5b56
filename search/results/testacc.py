"""Accuracy on the held-out test split, for the candidates a search chose.

The search selects on val; the front, the report and ``pick`` show accuracy re-measured
on the test split, which no worker ever received, with a 95 % Wilson interval. A
candidate is rebuilt at the highest rung it reached: from its checkpoint in
``RUN/rungs/`` (``torch.load(weights_only=True)``) when present, else by replaying its
rungs' distillation exactly (seeded). Results are cached in ``RUN/test_accuracy.json`` by
(trial, rung), so ``vitsearch list``, ``report`` and ``pick`` agree without re-measuring.

In a study whose ``latency.runtime`` is not eager, test accuracy is measured as val was
scored: in the runtime where it changes numerics (its own quantisation: the program is
built from the float structure and checked against eager first), else on the eager model
(identical within the checked tolerance). Each cached entry says where (``measured_in``);
an entry of a runtime study without it (measured on eager by an older vitsearch) is not
trusted and is measured again.
"""

from __future__ import annotations

import json
import logging
import sys
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

    rc = session.spec.recovery
    rungs = (0,) if config.is_identity() else rc.ladder[:rung + 1]  # the search never distils the teacher itself
    if run_dir is not None and number is not None:
        path = checkpoint_path(run_dir, number, rung)
        if path.exists() or path.is_symlink():  # a folder or a broken file is refused, not replaced
            return load_prepared(session.base, config, path, session.data.calibration, session.device)
        if rungs[-1] > 0:  # the search kept these weights: say that they are rebuilt (stderr, and a run's log)
            note = (f"rung checkpoint {str(path)!r} is missing: trial {number} is distilled again to rung {rung} "
                    f"({rungs[-1]} steps, seeded: the same weights)")
            print(f"vitsearch: {note}", file=sys.stderr)
            logging.getLogger("vitsearch.results").info(note)
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


def measure_test_deployed(session, prepared, config, deployed=None) -> dict[str, Any]:
    """Test accuracy of ``prepared`` (float structure for a runtime study) as the study deploys it.

    Eager study: the finalized eager model. Another runtime: run in it where it changes
    numerics (``deployed``, or a program built and checked here), else the eager model;
    ``measured_in`` and ``test_source`` say which.
    """
    import copy

    from vitsearch.spaces import finalize

    runtime = session.spec.latency.runtime
    if runtime == "eager":
        return {**measure_test(session, finalize(copy.deepcopy(prepared), config, device=str(session.device))),
                "measured_in": "eager"}
    from vitsearch.evaluators.accuracy import wilson_interval
    from vitsearch.evaluators.runtimes import get_runtime
    from vitsearch.evaluators.runtimes.eager import finalized
    from vitsearch.evaluators.runtimes.numerics import accuracy_in_runtime

    if not get_runtime(runtime).changes_numerics(config):
        out = measure_test(session, finalized(copy.deepcopy(prepared), config, session.device))
        out["test_source"] += f", eager PyTorch model ({runtime} runs it with the same numerics, checked)"
        return {**out, "measured_in": runtime}
    if deployed is None:
        from vitsearch.search.runtime_eval import build_for_study

        deployed = build_for_study(session, prepared, config)[0]
    acc = accuracy_in_runtime(deployed, session.data.test, session.spec.data.eval_batch_size,
                              f"test split of {session.data.name}")
    lo, hi = wilson_interval(acc.top1, acc.n)
    return {"test_accuracy": acc.top1, "test_lo": lo, "test_hi": hi, "test_n": acc.n,
            "test_source": f"{session.data.test_source}, run in {deployed.runtime} {deployed.version}",
            "measured_in": runtime}


def front_test_accuracy(session, run_dir: Path, front: pd.DataFrame) -> pd.DataFrame:
    """``front`` with test_accuracy / test_lo / test_hi / test_n, measured where not cached yet."""
    from vitsearch.search.results.rundir import write_atomic
    from vitsearch.search.results.variant import structure_config
    from vitsearch.spaces import CompressionConfig

    runtime = session.spec.latency.runtime
    cache = read_cache(run_dir, runtime)
    fresh = False
    for _, r in front.iterrows():
        key = f"{int(r['number'])}:{int(r['rung'])}"
        if key not in cache:
            config = CompressionConfig.from_dict(json.loads(r["config"]))
            # a non-eager runtime applies the precision itself: the search distilled the float structure
            built = config if runtime == "eager" else structure_config(config)
            prepared = rebuild_prepared(session, built, int(r["rung"]), run_dir, int(r["number"]))
            cache[key] = measure_test_deployed(session, prepared, config)
            fresh = True
    if fresh:
        write_atomic(Path(run_dir) / CACHE_FILE, json.dumps(cache, indent=1))
    return with_cached(front, cache)


def read_cache(run_dir: Path, runtime: str = "eager") -> dict[str, dict]:
    """The run's cached test accuracies by "trial:rung" (empty when none).

    For a study in another ``runtime``, entries not measured for it (older ones, measured
    on the eager model) are left out, so they are measured again.
    """
    path = Path(run_dir) / CACHE_FILE
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if runtime == "eager":
        return cache
    return {k: v for k, v in cache.items() if v.get("measured_in") == runtime}


def with_cached(front: pd.DataFrame, cache: dict[str, dict]) -> pd.DataFrame:
    """``front`` with the cached test columns (NaN where not measured)."""
    out = front.copy()
    cols = ("test_accuracy", "test_lo", "test_hi", "test_n")
    keys = [f"{int(n)}:{int(k)}" if pd.notna(k) else "" for n, k in zip(out["number"], out["rung"])]
    for col in cols:
        out[col] = [cache.get(key, {}).get(col, float("nan")) for key in keys]
    return out
