"""Optuna's parameter importances of a run's knobs, per objective (the report's "Knob effects")."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitsearch.search.results.runview import RunView


def knob_importances(view: RunView) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's parameter importances per objective, over trials with real (not placeholder) metrics.

    Returns ({objective: {param: importance}}, how they were computed or why not).
    """
    import optuna

    trials = [t for t in view.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if (t.user_attrs.get("evaluation") or {}).get("accuracy") is not None and t.params
              and t.user_attrs.get("reused_from") is None]  # trial 0 can be a source
    varying = {p for t in trials for p in t.params if len({str(u.params.get(p)) for u in trials}) > 1}
    if len(trials) < 4 or not varying:
        return {}, f"not computed: {len(trials)} evaluated trials with varying knobs (need at least 4)"
    out: dict[str, dict[str, float]] = {}
    try:
        evaluator, how = _evaluator()
        for i, (metric, _) in enumerate(view.objectives):
            out[metric] = optuna.importance.get_param_importances(
                _copy_study(trials, i, view.objectives), evaluator=evaluator, params=sorted(varying))
    except Exception as exc:  # importance is context, never worth failing the report over
        return {}, f"not computed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return out, f"{how}, over {len(trials)} completed, accuracy-evaluated, non-duplicate trials"


def _evaluator():
    import optuna

    try:
        import sklearn  # noqa: F401  (fANOVA's random forest)
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "Optuna PED-ANOVA importance"
    return optuna.importance.FanovaImportanceEvaluator(seed=0), "Optuna fANOVA importance (seed 0)"


def _copy_study(trials: list, index: int, objectives: list[tuple[str, str]]):
    """An in-memory single-objective study of ``trials``, valued by their real metric ``index``."""
    import optuna

    metric, direction = objectives[index]
    study = optuna.create_study(direction=direction)
    for t in trials:
        ev = t.user_attrs["evaluation"]
        value = (ev.get("latency") or {}).get("median_ms") if metric == "latency_ms" else ev.get(metric)
        if value is not None:
            study.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
    return study
