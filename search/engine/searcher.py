"""Ray Tune's OptunaSearch, adapted to a compression study.

What this adapter adds to ``ray.tune.search.optuna.OptunaSearch``:

* **Batches.** One Tune trial evaluates a batch of Optuna trials (candidates) and
  reports each as it finishes; Tune's per-trial overhead (about a second here) is paid
  once per batch, not per candidate.
* **Cheap first.** A candidate that repeats an evaluated config reuses its metrics, and
  one that the latency predictor already puts over the budget is recorded infeasible;
  both are told to Optuna at once, without a Tune trial.
* **Nothing swallowed.** Every tell sets the trial's user attributes (config,
  evaluation, feasibility, constraints, worker, error) first, and a failing tell raises.
* **Counting, shared.** The searcher returns FINISHED when the study holds the requested
  number of completed trials, counting those of earlier attempts and of other drivers
  of the same study; it stops asking once completed plus RUNNING trials (any driver)
  reach it, and each trial it asks is checked against the others
  (:mod:`vitsearch.search.engine.sharing`: surplus, reuse, duplicate).
* **Owned trials.** With an :class:`~vitsearch.search.engine.ownership.Ownership`, each
  asked trial is owned (heartbeats) until told, and dead drivers' trials are re-asked.
* Its state lives in the Optuna storage, so ``save``/``restore`` are no-ops: a resumed
  run reattaches to the storage instead of unpickling a searcher.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from vitsearch.search.engine import sharing
from vitsearch.search.results.tables import (ATTR_CONFIG, ATTR_CONSTRAINTS, ATTR_ERROR, ATTR_EVAL, ATTR_FEASIBLE,
                                      ATTR_INFEASIBLE, ATTR_NODE, ATTR_REUSED, ATTR_SECONDS, ATTR_TIMING,
                                      ATTR_WORKER)

log = logging.getLogger("vitsearch.run")

MAX_ASKS_PER_SUGGEST = 64
#: seconds between storage reads while the study waits on trials RUNNING elsewhere
IDLE_POLL_S = 1.0


def config_key(config_dict: dict) -> str:
    """Canonical JSON of a config: equal configs, equal keys."""
    return json.dumps(config_dict, sort_keys=True)


class CandidateSearch(OptunaSearch):
    """OptunaSearch that hands Tune batches of candidates and settles cheap ones itself.

    ``space``: a :class:`vitsearch.spaces.SearchSpace`; ``objectives``: (metric, direction)
    pairs; ``feasibility``: a :class:`vitsearch.search.engine.feasibility.Feasibility`;
    ``target``: completed trials wanted in the study; ``workers``: concurrent Tune trials
    (the last batches shrink so they finish together); ``on_settle(trial)`` is called after
    every tell (progress, tables); ``ownership``: an
    :class:`~vitsearch.search.engine.ownership.Ownership` (heartbeats, re-asking dead
    drivers' trials), or None.
    """

    def __init__(self, *, space, objectives: list[tuple[str, str]], feasibility, target: int, batch_size: int,
                 workers: int = 1,
                 sampler: optuna.samplers.BaseSampler, storage, study_name: str,
                 on_settle: Callable[[optuna.trial.FrozenTrial], None] | None = None, ownership=None):
        self.vs_space = space
        self.objectives = objectives
        self.feasibility = feasibility
        self.target = target
        self.batch_size = batch_size
        self.workers = max(1, workers)
        self.on_settle = on_settle
        self.ownership = ownership
        self._idle_until = 0.0
        self._batches: dict[str, list[optuna.Trial]] = {}
        self._told: set[int] = set()
        self._completed_here = 0  # trials this searcher told COMPLETE
        self.timings: list[dict] = []  # worker-side clocks of this attempt's evaluations (engine accounting)
        self.failures_in_a_row = 0
        self.max_failures_in_a_row = max(8, 2 * batch_size)
        self.last_error: str | None = None
        super().__init__(space=space.distributions(), metric=[m for m, _ in objectives],
                         mode=["max" if d == "maximize" else "min" for _, d in objectives],
                         sampler=sampler, storage=storage, study_name=study_name)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    @property
    def told(self) -> set[int]:
        """Numbers of the trials settled by this searcher (this attempt)."""
        return set(self._told)

    # ---- counting --------------------------------------------------------------------
    def completed(self) -> int:
        return len(self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    # ---- Tune's Searcher API -----------------------------------------------------------
    def gave_up(self) -> bool:
        """Too many failures in a row: something is broken for every candidate."""
        return self.failures_in_a_row >= self.max_failures_in_a_row

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.gave_up():
            return Searcher.FINISHED
        if time.monotonic() < self._idle_until:
            return None  # waiting on trials RUNNING elsewhere: read the storage at most every IDLE_POLL_S
        if self.ownership is not None:
            self.ownership.reap()  # dead drivers' trials: FAIL, and the same parameters WAITING again
        batch: list[tuple[optuna.Trial, Any]] = []
        completed_before = self._completed_here
        shared = sharing.counts(self._ot_study)  # every driver's trials: one storage read per suggest
        completed = shared["COMPLETE"]
        base = completed + shared["RUNNING"]
        # Near the end, share what is left between the workers instead of handing it all to
        # the first free one (which left the other idle for up to a whole batch).
        size = min(self.batch_size, max(1, -(-(self.target - base) // self.workers)))
        for _ in range(MAX_ASKS_PER_SUGGEST):
            done_here = self._completed_here - completed_before  # reused / infeasible, settled just now
            if len(batch) >= size or base + done_here + len(batch) >= self.target:
                break
            trial = self._ot_study.ask(fixed_distributions=self._space)
            if self.ownership is not None:
                self.ownership.own(trial)
            config = self.vs_space.config_from_params(trial.params)
            key = config_key(config.to_dict())
            trial.set_user_attr(ATTR_CONFIG, key)  # written before the check reads the others' (sharing.py)
            verdict = sharing.verdict(self._ot_study, trial, key, self.target)
            if verdict.action == "surplus":
                self._settle(trial, None, TrialState.PRUNED, {ATTR_ERROR: verdict.why})
                break
            if verdict.action == "reuse":
                self._reuse(trial, verdict.source)
            elif verdict.action == "duplicate":
                self._settle(trial, None, TrialState.PRUNED, {ATTR_ERROR: verdict.why})
            elif (reason := self.feasibility.precheck(config)) is not None:
                self._settle(trial, self.feasibility.placeholder_values(reason.metrics, self.objectives),
                             TrialState.COMPLETE, {ATTR_FEASIBLE: False, ATTR_INFEASIBLE: reason.text,
                                                   ATTR_EVAL: reason.metrics, ATTR_CONSTRAINTS: reason.constraints})
            else:
                batch.append((trial, config))
        if not batch:
            done_here = self._completed_here - completed_before
            if completed + done_here >= self.target:
                return Searcher.FINISHED
            # the rest is RUNNING (here or in another driver); if one dies its trial is asked again
            self._idle_until = time.monotonic() + IDLE_POLL_S
            return None
        self._batches[trial_id] = [t for t, _ in batch]
        return {"candidates": [{"number": t.number, "config": c.to_dict()} for t, c in batch]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        text = result.get("candidate_json")
        if text is None:
            return
        payload = json.loads(text)
        trial = self._find(trial_id, payload["number"])
        if trial is None or trial.number in self._told:
            return  # a retried batch re-reports what was already told
        timing = {k: payload[k] for k in ("started_at", "finished_at", "cpu_seconds", "process_cpu_seconds")
                  if payload.get(k) is not None}
        attrs = {ATTR_WORKER: payload.get("worker"), ATTR_NODE: payload.get("node"), ATTR_SECONDS: payload.get("seconds"), ATTR_TIMING: timing or None}
        if timing:
            self.timings.append({"worker": payload.get("worker"), "seconds": payload.get("seconds"), **timing})
        if payload.get("error"):
            self._settle(trial, None, TrialState.FAIL, {**attrs, ATTR_ERROR: payload["error"]})
            return
        metrics = payload["evaluation"]
        feasible = payload["feasible"]
        values = (self.feasibility.values(metrics, self.objectives) if metrics.get("accuracy") is not None
                  else self.feasibility.placeholder_values(metrics, self.objectives))
        attrs.update({ATTR_EVAL: metrics, ATTR_FEASIBLE: feasible, ATTR_CONSTRAINTS: payload["constraints"],
                      ATTR_INFEASIBLE: payload.get("infeasible_reason")})
        self._settle(trial, values, TrialState.COMPLETE, attrs)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error:
            self.on_trial_result(trial_id, result)
        for trial in self._batches.pop(trial_id, []):
            if trial.number not in self._told:
                why = "the worker evaluating it failed (Ray actor died or the batch raised) after retries"
                self._settle(trial, None, TrialState.FAIL, {ATTR_ERROR: why})

    def save(self, checkpoint_path: str) -> None:  # state lives in the Optuna storage
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    # ---- internals -----------------------------------------------------------------------
    def _find(self, trial_id: str, number: int) -> optuna.Trial | None:
        return next((t for t in self._batches.get(trial_id, []) if t.number == number), None)

    def _reuse(self, trial: optuna.Trial, source: int) -> None:
        src = self._ot_study._storage.get_trial(self._ot_study._storage.get_trial_id_from_study_id_trial_number(
            self._ot_study._study_id, source))
        attrs = {k: src.user_attrs.get(k) for k in (ATTR_EVAL, ATTR_FEASIBLE, ATTR_CONSTRAINTS, ATTR_INFEASIBLE)}
        attrs[ATTR_REUSED] = source
        self._settle(trial, list(src.values), TrialState.COMPLETE, attrs)

    def _settle(self, trial: optuna.Trial, values, state: TrialState, attrs: dict) -> None:
        # A failing tell must not vanish behind a log warning: let it raise - except when
        # another driver failed this trial as stale (this driver's heartbeats stopped for
        # longer than the grace period) and asked it again: the retry owns it now.
        try:
            frozen = self._tell(trial, values, state, attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.error("trial %d was failed as stale by another driver (no heartbeat for the grace period) and "
                      "asked again; this result is dropped", trial.number)
            self._told.add(trial.number)
            return
        finally:
            if self.ownership is not None:
                self.ownership.release(trial)
        self._told.add(trial.number)
        if state == TrialState.FAIL:
            self.failures_in_a_row += 1
            self.last_error = attrs.get(ATTR_ERROR)
        elif state == TrialState.COMPLETE:
            self.failures_in_a_row = 0
            self._completed_here += 1
        if self.on_settle is not None:
            self.on_settle(frozen)

    def _tell(self, trial: optuna.Trial, values, state: TrialState, attrs: dict) -> optuna.trial.FrozenTrial:
        for key, value in attrs.items():
            if value is not None:
                trial.set_user_attr(key, value)
        if state == TrialState.COMPLETE and attrs.get(ATTR_CONSTRAINTS):
            # Optuna's constraint API (<= 0 feasible), read by NSGA-II and TPE alike
            for name, value in zip(self.feasibility.constraint_names(), attrs[ATTR_CONSTRAINTS], strict=True):
                trial.set_constraint(name, value)
        return self._ot_study.tell(trial, values, state=state, skip_if_finished=False)
