"""A run's summary: what :func:`~vitsearch.search.engine.driver.run_study` returns and ``summary.json`` keeps.

Contract: :func:`write_summary` builds the summary of one attempt (counts, the Pareto
front with its test-split accuracy, the engine's books, the reference, the sitting
spread) and writes it to the run dir's ``summary.json`` atomically, every field but
``front_table`` (the printed table); :func:`earlier_attempts` carries the books of a
resumed run's earlier attempts forward from the ``summary.json`` they left.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitsearch.search.results.rundir import write_atomic
from vitsearch.search.results.sitting import run_sitting_sd, widen_frame
from vitsearch.search.results.basis import in_basis_order, rebase, study_basis
from vitsearch.search.results.tables import front_table, pareto_front, run_counts
from vitsearch.search.results.testacc import front_test_accuracy

if TYPE_CHECKING:
    import pandas as pd

    from vitsearch.search.engine.gain import Reference
    from vitsearch.search.engine.plan import RunPlan
    from vitsearch.search.session import Session

#: summary fields that are counts, stored in float columns when another row has none
INT_KEYS = ("number", "rung", "test_n")


def write_summary(plan: RunPlan, frame: pd.DataFrame, *, completed: int, seconds: float, books: dict,
                  session: Session, reference: Reference, sitting: dict | None, latency_source: str,
                  stopped_at_time_budget: bool, study) -> dict:
    """The attempt's summary from its trials ``frame`` (of ``study``) and ``books``, written to ``summary.json``;
    returned."""
    spec = plan.spec
    objectives = [(o.metric, o.direction) for o in spec.objectives]
    basis = study_basis(study, reference.latency_ratio)  # the report's: the printed table states ms as list does
    front = widen_frame(in_basis_order(pareto_front(frame, objectives), basis), run_sitting_sd({"sitting": sitting}))
    path = plan.run_dir.path
    if not front.empty and session.data.test is not None:
        front = front_test_accuracy(session, path, front)  # the split the search never saw
    counts = run_counts(frame, len(spec.recovery.ladder))
    summary = {
        "run_dir": str(path), "completed": completed, "requested": plan.trials,
        "workers": plan.workers, "batch_size": plan.batch_size,
        "evaluations": books.get("evaluations", 0), "evaluation_seconds": books.get("evaluation_seconds", 0.0),
        # worker time not spent evaluating (this attempt): all-in, and per trial (steady state)
        "engine_overhead_share": books.get("engine_overhead_share"),
        "steady_overhead_share": books.get("steady_overhead_share"),
        "engine": books,
        **counts, "rungs": list(spec.recovery.ladder), "reduction": spec.recovery.reduction,
        "reference": vars(reference),
        "test_split": session.data.test_source,
        "pareto": front["number"].astype(int).tolist(), "seconds": round(seconds, 1),
        "time_budget_minutes": spec.search.time_budget_minutes,
        "stopped_at_time_budget": stopped_at_time_budget,
        "pareto_test": [{k: _plain(int(r[k]) if k in INT_KEYS and r[k] == r[k] else r[k])
                         for k in ("number", "rung", "accuracy", "test_accuracy", "test_lo", "test_hi", "test_n")
                         if k in r} for _, r in front.iterrows()],
        "latency_source": latency_source,
        "sitting": sitting,
        "latency_basis": basis.text(),
        "front_table": front_table(rebase(front, basis)),
    }
    summary.update(earlier_attempts(path / "summary.json", books))
    write_atomic(path / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "front_table"}, indent=2))
    return summary


def earlier_attempts(path: Path, books: dict) -> dict:
    """This attempt's ``books`` with the earlier attempts' of a resumed run, from its last ``summary.json``.

    ``engine`` covers this attempt only (its start-up, drain and overhead are of one fit);
    ``engine_earlier_attempts`` keeps each earlier attempt's books, oldest first, and
    ``evaluations_all_attempts`` / ``evaluation_seconds_all_attempts`` add all of them up.
    An attempt killed before it wrote its summary left no books (its trials are in the storage).
    """
    try:
        prev = json.loads(path.read_text())
        earlier = [*prev.get("engine_earlier_attempts", []), {**prev.get("engine", {}), "seconds": prev.get("seconds")}]
    except (OSError, ValueError):
        earlier = []
    every = [*earlier, books]
    return {"engine_earlier_attempts": earlier,
            "evaluations_all_attempts": sum(b.get("evaluations", 0) for b in every),
            "evaluation_seconds_all_attempts": round(sum(b.get("evaluation_seconds", 0.0) for b in every), 2)}


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy and NaN to plain / None)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
