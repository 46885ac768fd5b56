"""Accuracy on the held-out test split, for the candidates a search chose.

The search selects on val; the front, the report and ``pick`` show accuracy re-measured
on the test split, which no worker ever received, with a 95 % Wilson interval. A
candidate is rebuilt at the highest rung it reached: from its checkpoint in
``RUN/rungs/`` (``torch.load(weights_only=True)``) when present, else by replaying its
rungs' distillation exactly (seeded). Results are cached in ``RUN/test_accuracy.json`` by
(trial, rung), so ``vitsearch list``, ``report`` and ``pick`` agree without re-measuring.

Test accuracy is measured as val was scored (:class:`vitsearch.evaluators.pipeline.Pipeline`):
in the study's runtime where it changes numerics (its own quantisation), else on the eager
model (identical within the checked tolerance). Each cached entry says where
(``measured_in``; none: eager) and keeps which images were right (``test_correct``), so
every variant's drop against the uncompressed model (cached as :data:`BASE_KEY`) is
measured **paired**, on the same images (:mod:`vitsearch.evaluators.paired`): columns
``paired_drop``, ``paired_drop_low``, ``paired_drop_high``, as fractions. An entry
measured elsewhere or without per-image results is measured again.
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
#: the uncompressed model's entry in the cache: what every front variant's test accuracy is paired with
BASE_KEY = "base"


def checkpoint_path(run_dir: Path, number: int, rung: int) -> Path:
    """Where the search keeps trial ``number``'s weights at ``rung``."""
    return Path(run_dir) / RUNG_DIR / f"trial-{number}-rung-{rung}.pt"


def rebuild_prepared(session, config, rung: int, run_dir: Path | None = None, number: int | None = None,
                     threads: Any = None):
    """The runtime's prepared structure of ``config`` at ``rung`` of the study's ladder, as the search built it.

    From the trial's rung checkpoint where the run kept it; else the rungs are distilled
    again, seeded, at ``threads`` torch threads: the count the search distilled it with
    (its record's ``recovery_threads``), as CPU kernels sum in another order at another count
    (a 2-thread replay of a 1-thread trial differed by up to 4.6e-4 in its weights).
    """
    from vitsearch.evaluators.distill import distilled_chain, load_prepared
    from vitsearch.evaluators.latency.timing.context import torch_threads

    pipe, rc = session.pipeline, session.spec.recovery
    structure = pipe.runtime.structure(config)
    rungs = (0,) if pipe.is_uncompressed(config) else rc.ladder[:rung + 1]  # the search never distils the teacher itself
    threads = None if threads is None or pd.isna(threads) else int(threads)  # NaN / NA: not recorded
    if run_dir is not None and number is not None:
        path = checkpoint_path(run_dir, number, rung)
        if path.exists() or path.is_symlink():  # a folder or a broken file is refused, not replaced
            return load_prepared(session.base, structure, path, session.data.calibration, session.device)
        if rungs[-1] > 0:  # the search kept these weights: say that they are rebuilt (stderr, and a run's log)
            how = (f"seeded, at the {threads} torch thread(s) its last rung was distilled with: the same weights "
                   "unless a resumed run distilled its rungs at other counts" if threads else
                   "seeded; the search's thread count is not recorded: the weights may differ in the last digits")
            note = (f"rung checkpoint {str(path)!r} is missing: trial {number} is distilled again to rung {rung} "
                    f"({rungs[-1]} steps, {how})")
            print(f"vitsearch: {note}", file=sys.stderr)
            logging.getLogger("vitsearch.results").info(note)
    with torch_threads(threads or None):  # 0 is no thread count: as unrecorded
        return distilled_chain(session.base, structure, session.data.train, rungs=rungs,
                               calibration=session.data.calibration, **pipe.recovery_settings(config))


def measure_test(session, model) -> dict[str, Any]:
    """Top-1 of ``model`` on the session's test split, with its 95 % Wilson interval."""
    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.accuracy import wilson_interval

    acc = evaluate_accuracy(model, session.data.test, session.device, session.spec.data.eval_batch_size,
                            source=f"test split of {session.data.name}")
    lo, hi = wilson_interval(acc.top1, acc.n)
    return {"test_accuracy": acc.top1, "test_lo": lo, "test_hi": hi, "test_n": acc.n,
            "test_source": session.data.test_source, "test_correct": acc.correct}


def measure_test_deployed(session, prepared, config, program=None) -> dict[str, Any]:
    """Test accuracy of ``prepared`` (the runtime's structure of ``config``) as the study deploys it.

    In the runtime where it changes numerics (``program``: its checked program of these
    weights, else built here), else on the eager model; ``measured_in`` names the study's
    runtime and ``test_source`` says which model ran.
    """
    from vitsearch.evaluators.accuracy import wilson_interval

    pipe = session.pipeline
    acc, in_runtime = pipe.accuracy(prepared, config, session.data.test, f"test split of {session.data.name}",
                                    program)
    lo, hi = wilson_interval(acc.top1, acc.n)
    how = (f"run in {acc.source.rsplit('run in ', 1)[-1]}" if in_runtime else None if pipe.runtime.is_reference
           else f"eager PyTorch model ({pipe.runtime.name} runs it with the same numerics, checked)")
    return {"test_accuracy": acc.top1, "test_lo": lo, "test_hi": hi, "test_n": acc.n,
            "test_source": session.data.test_source + (f", {how}" if how else ""), "measured_in": pipe.runtime.name,
            "test_correct": acc.correct}


def base_test(session, cache: dict[str, dict]) -> tuple[dict[str, Any], bool]:
    """The uncompressed model's test entry (cache key :data:`BASE_KEY`), measured here unless cached; (entry, fresh).

    The model as the study deploys it (``model.precision``): on a bf16 study, the model in bf16.
    """
    if cache.get(BASE_KEY, {}).get("test_correct"):
        return cache[BASE_KEY], False
    reference = session.reference_config
    return measure_test_deployed(session, session.pipeline.prepare(reference), reference), True


def paired_vs_base(entry: dict[str, Any], base: dict[str, Any] | None):
    """The PairedDrop of a test entry against the uncompressed model's, or None when either lacks per-image results."""
    from vitsearch.evaluators.paired import paired_drop, unpack

    if not base or not entry.get("test_correct") or not base.get("test_correct") or entry["test_n"] != base["test_n"]:
        return None
    return paired_drop(unpack(base["test_correct"], base["test_n"]), unpack(entry["test_correct"], entry["test_n"]))


def paired_columns(entry: dict[str, Any], base: dict[str, Any] | None) -> dict[str, float]:
    """``paired_drop``, ``paired_drop_low``, ``paired_drop_high`` (fractions) of ``entry`` against ``base``, or {}."""
    d = paired_vs_base(entry, base)
    return {} if d is None else {"paired_drop": d.drop, "paired_drop_low": d.low, "paired_drop_high": d.high}


def front_test_accuracy(session, run_dir: Path, front: pd.DataFrame) -> pd.DataFrame:
    """``front`` with test_accuracy / test_lo / test_hi / test_n, measured where not cached yet."""
    from vitsearch.search.results.rundir import write_atomic
    from vitsearch.spaces import CompressionConfig

    runtime = session.pipeline.runtime
    cache = read_cache(run_dir, runtime.name, session.data.test_source)
    cache[BASE_KEY], fresh = base_test(session, cache)
    for _, r in front.iterrows():
        key = f"{int(r['number'])}:{int(r['rung'])}"
        if not cache.get(key, {}).get("test_correct"):
            config = CompressionConfig.from_dict(json.loads(r["config"]))
            prepared = rebuild_prepared(session, config, int(r["rung"]), run_dir, int(r["number"]),
                                        r.get("recovery_threads"))
            cache[key] = measure_test_deployed(session, prepared, config)
            fresh = True
    if fresh:
        write_atomic(Path(run_dir) / CACHE_FILE, json.dumps(cache, indent=1))
    return with_cached(front, cache)


def read_cache(run_dir: Path, runtime: str = "eager", test_source: str | None = None) -> dict[str, dict]:
    """The run's cached test accuracies by "trial:rung" (empty when none).

    Entries not measured for ``runtime`` are left out, so they are measured again; an
    entry that names none was measured on the eager model (by an older vitsearch). With
    ``test_source`` (the session's ``data.test_source``), so are entries measured on
    another test split (an older vitsearch's, or other data): they cannot be paired with
    this split's.
    """
    path = Path(run_dir) / CACHE_FILE
    cache = json.loads(path.read_text()) if path.is_file() else {}
    return {k: v for k, v in cache.items() if v.get("measured_in", "eager") == runtime
            and (test_source is None or _same_split(str(v.get("test_source", "")), test_source))}


def _same_split(recorded: str, test_source: str) -> bool:
    """Whether an entry's ``test_source`` is ``test_source``, or it with how the model ran appended (", ...")."""
    return recorded == test_source or recorded.startswith(test_source + ", ")


def with_cached(front: pd.DataFrame, cache: dict[str, dict]) -> pd.DataFrame:
    """``front`` with the cached test columns and the paired drop against the uncompressed model (NaN where not measured)."""
    out = front.copy()
    keys = [f"{int(n)}:{int(k)}" if pd.notna(k) else "" for n, k in zip(out["number"], out["rung"])]
    rows = [{**cache.get(key, {}), **paired_columns(cache.get(key, {}), cache.get(BASE_KEY))} for key in keys]
    for col in ("test_accuracy", "test_lo", "test_hi", "test_n", "paired_drop", "paired_drop_low", "paired_drop_high"):
        out[col] = [row.get(col, float("nan")) for row in rows]
    return out
