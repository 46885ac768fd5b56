"""What Optuna is told about each candidate, and the books kept as it is told.

:class:`Teller` is what :class:`~vitsearch.search.engine.searcher.CandidateSearch` tells
every trial it asks through, once each:

* **Cheap first.** A candidate that repeats an evaluated config reuses its metrics, and
  one that the latency predictor already puts over the budget is recorded infeasible;
  both are told to Optuna at once, without a Tune trial.
* **Nothing swallowed.** Every tell sets the trial's user attributes (config,
  evaluation, feasibility, constraints, worker, error) first, and a failing tell raises,
  except where another driver failed the trial as stale meanwhile (the retry it asked
  owns it now): that result is dropped, logged as an error.
* **Only measured values.** A candidate settled on its cost (predicted or measured
  latency/size over a budget, or no gain over the uncompressed model) is PRUNED with its
  measured constraints and attribute ``settled``, never a COMPLETE trial with an invented
  accuracy.
* **Books.** Each result's worker clocks (``timings``, the engine's accounting), the
  first-rung and rung seconds the :class:`~vitsearch.search.engine.clock.BudgetClock`
  estimates from, promotion results (:class:`~vitsearch.search.engine.promotions.Promotions`),
  and failures in a row (a COMPLETE trial or a promotion that did not fail resets them).

Its state is this attempt's: the storage holds the rest, and the searcher that owns a
teller never pickles it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from vitsearch.search.engine.clock import BudgetClock
from vitsearch.search.engine.gain import NO_GAIN_CONSTRAINT
from vitsearch.search.engine.optuna_access import frozen_trial
from vitsearch.search.engine.promotions import Promotions, payload_timing
from vitsearch.search.engine.sharing import Verdict
from vitsearch.search.results.tables import (ATTR_CONFIG, ATTR_CONSTRAINTS, ATTR_DETERMINISTIC, ATTR_ERROR, ATTR_EVAL,
                                             ATTR_FEASIBLE, ATTR_INFEASIBLE, ATTR_NODE, ATTR_REUSED, ATTR_SECONDS,
                                             ATTR_SETTLED, ATTR_TIMING, ATTR_WORKER)

log = logging.getLogger("vitsearch.run")


@dataclass(frozen=True)
class Settled:
    """A candidate settled on its cost before any Tune trial: why, what is known, measured constraints."""

    text: str
    metrics: dict
    constraints: list[float]
    settled: str


class Teller:
    """Tells ``study`` each asked trial's outcome and keeps this attempt's books of it.

    ``feasibility``: a :class:`vitsearch.search.engine.feasibility.Feasibility`; ``objectives``:
    (metric, direction) pairs; ``reference``: the uncompressed model's costs
    (:class:`~vitsearch.search.engine.gain.Reference`) or None; ``promotions`` and ``clock``:
    the searcher's; ``ownership``: released on every tell, or None; ``on_settle(trial)`` is
    called after every tell. ``told``: numbers of the trials told (or dropped) here;
    ``timings``: worker-side clocks of this attempt's evaluations; ``failures_in_a_row`` and
    ``last_error``: for the searcher's giving up.
    """

    def __init__(self, study: optuna.Study, *, feasibility, objectives: list[tuple[str, str]], reference,
                 promotions: Promotions, clock: BudgetClock, ownership,
                 on_settle: Callable[[optuna.trial.FrozenTrial], None] | None):
        self.study = study
        self.feasibility = feasibility
        self.objectives = objectives
        self.reference = reference
        self.promotions = promotions
        self.clock = clock
        self.ownership = ownership
        self.on_settle = on_settle
        self.told: set[int] = set()
        self.timings: list[dict] = []  # worker-side clocks of this attempt's evaluations (engine accounting)
        self.failures_in_a_row = 0
        self.last_error: str | None = None

    # ---- told without a Tune trial ------------------------------------------------------
    def tell_at_once(self, trial: optuna.Trial, verdict: Verdict, config) -> bool:
        """Tell ``trial`` now where its ``verdict`` (reuse, duplicate, failed) or the driver-side precheck of
        ``config`` settles it; False (nothing told) where it is to be evaluated."""
        if verdict.action == "reuse":
            self._reuse(trial, verdict.source)
        elif verdict.action in ("duplicate", "failed"):  # running elsewhere, or failed for its config before
            self.settle(trial, None, TrialState.PRUNED, verdict.attrs())
        elif (reason := self._precheck(config)) is not None:
            self.settle(trial, None, TrialState.PRUNED, {
                ATTR_FEASIBLE: False, ATTR_INFEASIBLE: reason.text, ATTR_EVAL: reason.metrics,
                ATTR_CONSTRAINTS: reason.constraints, ATTR_SETTLED: reason.settled})
        else:
            return False
        return True

    def _reuse(self, trial: optuna.Trial, source: int) -> None:
        src = frozen_trial(self.study, source)
        attrs = {k: src.user_attrs.get(k) for k in (ATTR_EVAL, ATTR_FEASIBLE, ATTR_CONSTRAINTS, ATTR_INFEASIBLE,
                                                    ATTR_SETTLED)}
        attrs[ATTR_REUSED] = source
        # the source's state: a settled (PRUNED) config stays settled, with its measured constraints only
        self.settle(trial, list(src.values) if src.state == TrialState.COMPLETE else None, src.state, attrs)

    def _precheck(self, config) -> Settled | None:
        """Driver-side: over a budget on predicted latency, using a screened value, or (latency the only cost
        objective) no gain on predicted latency."""
        reason = self.feasibility.precheck(config)
        if reason is not None:
            return Settled(reason.text, reason.metrics, self._measured(reason.constraints), "cost budget")
        predictor, ref = self.feasibility.predictor, self.reference
        if ref is not None and (hit := ref.screened(config)) is not None:  # nothing measured: 0 on every budget
            why, metrics, margin = hit
            return Settled(why, metrics, [*(0.0 for _ in self._measured_names()), margin], "no gain")
        if predictor is None or ref is None or ref.cost_objectives != ("latency_ms",):
            return None
        metrics = self.feasibility.predicted(config)
        why = ref.no_gain(metrics)
        if why is None:
            return None
        cons = self._measured(self.feasibility.constraints({**metrics, "size_mb": 0.0}))
        return Settled(why, metrics, [*cons, ref.constraint(metrics)], "no gain")

    # ---- results from the workers ---------------------------------------------------------
    def first_result(self, trial: optuna.Trial, payload: dict) -> None:
        """Tell ``trial`` its first rung's result (a worker's ``payload``): FAIL with the worker's error, PRUNED
        when settled on its cost (measured constraints only), else COMPLETE and a contender for a promotion."""
        timing = self._book_timing(payload)
        attrs = {ATTR_WORKER: payload.get("worker"), ATTR_NODE: payload.get("node"), ATTR_SECONDS: payload.get("seconds"),
                 ATTR_TIMING: timing or None}
        if payload.get("seconds") is not None:
            self.clock.record_first(payload["seconds"])
        if payload.get("error"):
            failed_for_good = payload.get("config_determined") or None  # sharing.verdict: not asked again
            self.settle(trial, None, TrialState.FAIL,
                        {**attrs, ATTR_ERROR: payload["error"], ATTR_DETERMINISTIC: failed_for_good})
            return
        metrics = payload["evaluation"]
        attrs.update({ATTR_EVAL: metrics, ATTR_FEASIBLE: payload["feasible"], ATTR_CONSTRAINTS: payload["constraints"],
                      ATTR_INFEASIBLE: payload.get("infeasible_reason")})
        if metrics.get("accuracy") is None:  # settled on its cost: nothing but measured costs is told
            attrs[ATTR_SETTLED] = payload.get("settled") or "cost budget"
            attrs[ATTR_CONSTRAINTS] = self._measured(payload["constraints"])
            if attrs[ATTR_SETTLED] == "no gain" and self.reference is not None:
                attrs[ATTR_CONSTRAINTS].append(self.reference.constraint(metrics))
            self.settle(trial, None, TrialState.PRUNED, attrs)
            return
        values = self.feasibility.values(metrics, self.objectives)
        if self.settle(trial, values, TrialState.COMPLETE, attrs):  # dropped: no contender for a promotion
            self.promotions.remember_first(trial.number, trial.user_attrs[ATTR_CONFIG], metrics, values,
                                           feasible=payload["feasible"] is not False)

    def promotion_result(self, trial_id: str, payload: dict) -> None:
        """Book a promotion's result (Tune trial ``trial_id``, a rung above the first) with the promotions."""
        outcome = self.promotions.result(trial_id, payload, lambda m: self.feasibility.values(m, self.objectives))
        if outcome is None:
            return  # a retried batch re-reports what was already recorded
        self._book_timing(payload)
        if payload.get("seconds") is not None and not outcome.failed:
            self.clock.record_rung(outcome.rung, payload["seconds"])
        if outcome.failed:
            self.count_failure(outcome.why)
        else:
            self.failures_in_a_row = 0

    def _book_timing(self, payload: dict) -> dict:
        """Keep a result's worker clocks for the engine's books; returns them."""
        timing = payload_timing(payload)
        if timing:
            self.timings.append({"worker": payload.get("worker"), "seconds": payload.get("seconds"), **timing})
        return timing

    def count_failure(self, why: str | None) -> None:
        """One more failure in a row; ``why`` becomes the last error."""
        self.failures_in_a_row += 1
        self.last_error = why

    # ---- the tell ------------------------------------------------------------------------
    def settle(self, trial: optuna.Trial, values, state: TrialState, attrs: dict) -> bool:
        """Tell ``trial``; False when its result was dropped (another driver failed it as stale meanwhile)."""
        # A failing tell must not vanish behind a log warning: let it raise - except when
        # another driver failed this trial as stale (this driver's heartbeats stopped for
        # longer than the grace period) and asked it again: the retry owns it now.
        try:
            frozen = self._tell(trial, values, state, attrs)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # failed while its attributes were written (UpdateFinishedTrialError) or between the last
            # write and the tell (Optuna's "Cannot tell a FAIL trial": ValueError, re-read to be sure)
            if isinstance(exc, ValueError) and not (str(exc).startswith("Cannot tell a ")
                                                    and self._finished_elsewhere(trial)):
                raise
            log.error("trial %d was failed as stale by another driver (no heartbeat for the grace period) and "
                      "asked again; this result is dropped", trial.number)
            self.told.add(trial.number)
            return False
        finally:
            if self.ownership is not None:
                self.ownership.release(trial)
        self.told.add(trial.number)
        if state == TrialState.FAIL:
            self.count_failure(attrs.get(ATTR_ERROR))
        elif state == TrialState.COMPLETE:
            self.failures_in_a_row = 0
        if self.on_settle is not None:
            self.on_settle(frozen)
        return True

    def _finished_elsewhere(self, trial: optuna.Trial) -> bool:
        """Whether the storage holds ``trial`` finished (another driver failed it as stale)."""
        return frozen_trial(self.study, trial.number).state.is_finished()

    def _tell(self, trial: optuna.Trial, values, state: TrialState, attrs: dict) -> optuna.trial.FrozenTrial:
        for key, value in attrs.items():
            if value is not None:
                trial.set_user_attr(key, value)
        if state in (TrialState.COMPLETE, TrialState.PRUNED) and attrs.get(ATTR_CONSTRAINTS):
            # Optuna's constraint API (<= 0 feasible), read by NSGA-II and TPE alike; a settled
            # (PRUNED) trial carries only what was measured, plus its no-gain margin
            names = self.feasibility.constraint_names() if state == TrialState.COMPLETE else self._measured_names()
            if len(attrs[ATTR_CONSTRAINTS]) == len(names) + 1:
                names = [*names, NO_GAIN_CONSTRAINT]
            for name, value in zip(names, attrs[ATTR_CONSTRAINTS], strict=True):
                trial.set_constraint(name, value)
        return self.study.tell(trial, values, state=state, skip_if_finished=False)

    # ---- settled on cost -----------------------------------------------------------------
    def _measured_names(self) -> list[str]:
        return [n for n in self.feasibility.constraint_names() if n != "accuracy"]

    def _measured(self, constraints: list[float]) -> list[float]:
        """The constraint values without the accuracy one (no accuracy was measured)."""
        names = self.feasibility.constraint_names()
        return [v for n, v in zip(names, constraints, strict=True) if n != "accuracy"]
