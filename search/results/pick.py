"""``vitsearch pick``: the most accurate Pareto variant within a latency budget, exported.

The budget is checked against latencies re-measured on this machine when its device
fingerprint is the study's, else against the recorded (measured or predicted) ones,
and the output says which. The winner is rebuilt exactly as the search evaluated it
(its checkpoint at the highest rung it reached, or the same distillation replayed),
re-evaluated on val, measured on the held-out test split, polished (``--polish-steps``
more distillation steps; both accuracies recorded) and written with
:func:`vitsearch.search.results.variant.write_variant`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from vitsearch.spaces.errors import ConfigError, NothingWithinBudget

#: accuracy is deterministic on CPU; on CUDA kernels may differ in the last bits of a
#: logit, which can flip an argmax near a tie: allow a few images of the val split.
ACCURACY_TOLERANCE = {"cpu": 0.0, "cuda": 0.005}


@dataclass
class Choice:
    """The winner, the runner-up (or None) and a sentence on why."""

    winner: pd.Series
    runner_up: pd.Series | None
    why: str


def check_budget(latency_ms: float, min_accuracy: float | None, max_size_mb: float | None) -> None:
    """ConfigError (exit 2) for a budget that cannot mean anything."""
    if not latency_ms > 0:
        raise ConfigError(f"--latency-ms: must be > 0, got {latency_ms:g}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError(f"--min-accuracy: must be a fraction in [0, 1] (e.g. 0.95), got {min_accuracy:g}")
    if max_size_mb is not None and not max_size_mb > 0:
        raise ConfigError(f"--max-size-mb: must be > 0, got {max_size_mb:g}")


def choose(front: pd.DataFrame, latency_ms: float, min_accuracy: float | None = None,
           max_size_mb: float | None = None) -> Choice:
    """Most accurate front row with ``budget_ms <= latency_ms`` (and the optional limits); ties go to the faster."""
    check_budget(latency_ms, min_accuracy, max_size_mb)
    if front.empty:
        raise NothingWithinBudget("no Pareto variant at all: the run has no feasible completed trial; "
                                  "relax the study's constraints or run more trials")
    ok = front[front["budget_ms"] <= latency_ms]
    if min_accuracy is not None:
        ok = ok[ok["accuracy"] >= min_accuracy]
    if max_size_mb is not None:
        ok = ok[ok["size_mb"] <= max_size_mb]
    if ok.empty:
        fastest = front.sort_values("budget_ms").iloc[0]
        extra = "".join([f", accuracy >= {min_accuracy:.2%}" if min_accuracy is not None else "",
                         f", size <= {max_size_mb:g} MB" if max_size_mb is not None else ""])
        raise NothingWithinBudget(
            f"no Pareto variant within {latency_ms:g} ms{extra}; the fastest is trial {int(fastest['number'])} at "
            f"{fastest['budget_ms']:.3f} ms ({fastest['budget_source']}), accuracy {fastest['accuracy']:.2%}, "
            f"size {fastest['size_mb']:.3f} MB")
    ranked = ok.sort_values(["accuracy", "budget_ms"], ascending=[False, True])
    win = ranked.iloc[0]
    runner = ranked.iloc[1] if len(ranked) > 1 else None
    why = (f"trial {int(win['number'])} wins: the most accurate ({win['accuracy']:.2%}) of {len(ok)} Pareto "
           f"variant(s) within {latency_ms:g} ms, at {win['budget_ms']:.3f} ms ({win['budget_source']}), "
           f"{win['size_mb']:.3f} MB: {win['summary']}")
    over = len(front) - len(front[front["budget_ms"] <= latency_ms])
    if over:
        why += f"; {over} more accurate or slower front variant(s) exceed the budget"
    return Choice(win, runner, why)


def runner_up_line(choice: Choice) -> str:
    """One sentence on the runner-up and how it compares."""
    r, w = choice.runner_up, choice.winner
    if r is None:
        return "runner-up: none (the winner is the only front variant within the budget)"
    return (f"runner-up: trial {int(r['number'])}, {r['accuracy']:.2%} at {r['budget_ms']:.3f} ms, "
            f"{r['size_mb']:.3f} MB ({(w['accuracy'] - r['accuracy']) * 100:.1f} points less accurate, "
            f"{r['budget_ms'] - w['budget_ms']:+.3f} ms latency vs the winner): {r['summary']}")


def export(view, choice: Choice, session, out: Path, remeasure_why: str, polish_steps: int | None = None) -> dict[str, Any]:
    """Rebuild (at the rung it reached), re-check, polish, measure on test and write the winner to ``out``.

    ``polish_steps`` (default: the study's top rung) more distillation steps before export;
    the polished weights are kept only when their val accuracy is not lower (val selects,
    test reports). Returns the provenance, with both accuracies.
    """
    import copy

    import torch

    from vitsearch.evaluators.distill import distil_further
    from vitsearch.search.results.testacc import measure_test, rebuild_prepared
    from vitsearch.search.results.variant import export_program, write_variant
    from vitsearch.spaces import CompressionConfig, finalize

    row = choice.winner
    number, rung = int(row["number"]), int(row["rung"])
    ev = view.evaluation(number)
    config = CompressionConfig.from_dict(json.loads(row["config"]))
    prepared = rebuild_prepared(session, config, rung, view.path, number)
    info = copy.deepcopy(getattr(prepared, "vitsearch_info", {}))
    model = finalize(prepared, config, device=str(session.device))
    acc = _val(session, model, view)
    tol = ACCURACY_TOLERANCE[session.device.type]
    if abs(acc.top1 - ev["accuracy"]) > tol:
        raise ConfigError(f"pick: trial {number} re-evaluates to {acc.top1:.4f}, not its recorded "
                          f"{ev['accuracy']:.4f} (tolerance {tol}); was the run made with other code or data?")
    test = measure_test(session, model)
    rc = view.spec.recovery
    steps = rc.ladder[-1] if polish_steps is None else polish_steps
    polish = {"steps": steps, "kept": False}
    if steps > 0 and not config.is_identity():
        polished = distil_further(copy.deepcopy(prepared), session.base, session.data.train, steps=steps,
                                  rung=len(rc.ladder), device=session.device, lr=rc.lr, batch_size=rc.batch_size,
                                  temperature=rc.temperature, alpha=rc.alpha, seed=rc.seed)
        pmodel = finalize(polished, config, device=str(session.device))
        pval = _val(session, pmodel, view)
        polish.update(val_accuracy=pval.top1, **measure_test(session, pmodel), kept=pval.top1 >= acc.top1)
        if polish["kept"]:
            prepared, model = polished, pmodel
    elif steps > 0:
        polish["note"] = "the uncompressed model is the teacher: nothing to polish"
    provenance = _provenance(view, row, ev, config, acc, tol, info, remeasure_why)
    provenance["accuracy"].update(test={k: v for k, v in test.items()}, polish=polish, rung=rung,
                                  recovery_steps_before_polish=ev.get("recovery_steps"))
    example = torch.randn(*session.input_shape, device=session.device)
    write_variant(out, prepared, config, view.path / "study.yaml", provenance,
                  program_of=lambda p: export_program(model, example, p))
    return provenance


def _val(session, model, view):
    from vitsearch.evaluators import evaluate_accuracy

    return evaluate_accuracy(model, session.data.val, session.device, view.spec.data.eval_batch_size,
                             source=f"val split of {session.data.name}")


def _provenance(view, row, ev, config, acc, tol, info, remeasure_why) -> dict[str, Any]:
    remeasured = None if pd.isna(row.get("remeasured_ms", float("nan"))) else {
        "median_ms": row["remeasured_ms"], "p10_ms": row["remeasured_p10_ms"], "p90_ms": row["remeasured_p90_ms"],
        "n_runs": int(row["remeasured_runs"]), "source": "measured (re-measured at pick)"}
    return {
        "study": view.spec.name, "run_dir": str(view.path.resolve()), "trial": int(row["number"]),
        "base_model": view.spec.model.name, "config": config.to_dict(), "config_summary": config.summary(),
        "accuracy": {"recorded": ev["accuracy"], "top5": ev.get("top5"), "source": ev.get("accuracy_source"),
                     "at_export": acc.top1, "tolerance": tol, "base_accuracy": view.base_accuracy},
        "latency": {"recorded": ev.get("latency"), "remeasured": remeasured, "used_ms": float(row["budget_ms"]),
                    "used_source": row["budget_source"], "note": remeasure_why},
        "device_fingerprint": ev.get("fingerprint"), "size_mb": ev.get("size_mb"),
        "size_mb_sparse_storage": ev.get("size_mb_sparse_storage"), "macs": ev.get("macs"),
        "recovery_steps": ev.get("recovery_steps"), "compression": _jsonable(info),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
