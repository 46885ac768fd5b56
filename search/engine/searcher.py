"""Ray Tune's OptunaSearch, adapted to a compression study.

What this adapter adds to ``ray.tune.search.optuna.OptunaSearch``:

* **Batches.** One Tune trial evaluates a batch of Optuna trials (candidates) and
  reports each as it finishes; Tune's per-trial overhead is paid
  once per batch, not per candidate.
* **Cheap first.** A candidate that repeats an evaluated config reuses its metrics, and
  one that the latency predictor already puts over the budget is recorded infeasible;
  both are told to Optuna at once, without a Tune trial.
* **Nothing swallowed.** Every tell sets the trial's user attributes (config,
  evaluation, feasibility, constraints, worker, error) first, and a failing tell raises.
* **Rungs.** With ``recovery.rungs`` a free worker first takes a promotion that is due
  (:mod:`vitsearch.search.engine.rungs` decides, :mod:`vitsearch.search.engine.promotions`
  keeps the book in the storage), alone in its batch, else new candidates. A trial is
  told once, at its first rung (the fidelity every candidate shares); its later rungs are
  study user attributes, so a resumed driver re-runs the lost ones and promotes nothing
  twice.
* **What Optuna is told.** Only measured values: a candidate settled on its cost
  (predicted or measured latency/size over a budget, or no gain over the uncompressed
  model) is PRUNED with its measured constraints and attribute ``settled``, never a
  COMPLETE trial with an invented accuracy. A sampler that learns from COMPLETE trials
  only (GP, NSGA-II) may then keep proposing settled candidates: after
  :data:`RANDOM_AFTER` asks in a row with nothing to evaluate, every ask takes a random
  draw not asked before, until one is evaluated.
* **Time budget.** With a ``deadline`` no batch or promotion is handed out after it;
  what is in flight finishes and is told (nothing is left RUNNING), then FINISHED. As it
  nears, batches shrink to what the first-rung evaluations say still fits (the
  :class:`~vitsearch.search.engine.clock.BudgetClock` keeps the time and its estimates).
* **Finishing the front.** With ``finish_front``, the end of a search promotes the front's
  candidates left below the top rung, one rung at a time, before any quota promotion:
  once every candidate is asked (``target``), and, with a deadline, in its last part,
  as long as the front's remaining rungs take by the rung times measured so far (at most
  :data:`~vitsearch.search.engine.clock.FINISH_SHARE` of the budget), when neither a new
  candidate nor a quota promotion is handed out (batches are sized to end before it), and
  no promotion that cannot finish before the deadline. Plain ASHA leaves
  a candidate that joined the front late at the rung it reached: it is scored on fewer
  distillation steps than the rest (three of six front points in one 10-minute run).
* **Counting, shared.** ``target`` counts candidates evaluated (COMPLETE, not reused) in
  the whole study, by every driver and earlier attempt; settled and reused ones are
  counted apart and do not use it up. The searcher stops asking once evaluated plus
  RUNNING trials (any driver) reach the target, checks each trial it asks against the
  others (:mod:`vitsearch.search.engine.sharing`: surplus, reuse, duplicate), and returns
  FINISHED when the target is met, nothing is in flight here and no promotion is due.
* **Owned trials.** With an :class:`~vitsearch.search.engine.ownership.Ownership`, each
  asked trial is owned (heartbeats) until told, and dead drivers' trials are re-asked.
* Its state lives in the Optuna storage, so ``save``/``restore`` are no-ops: a resumed
  run reattaches to the storage instead of unpickling a searcher.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from vitsearch.search.engine import sharing
from vitsearch.search.engine.clock import BudgetClock
from vitsearch.spaces.errors import VitsearchError
from vitsearch.search.engine.gain import NO_GAIN_CONSTRAINT
from vitsearch.search.engine.optuna_access import frozen_trial, study_of
from vitsearch.search.engine.promotions import Promotions, config_key, payload_timing
from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.results.tables import (ATTR_CONFIG, ATTR_CONSTRAINTS, ATTR_DETERMINISTIC, ATTR_ERROR, ATTR_EVAL, ATTR_FEASIBLE,
                                             ATTR_INFEASIBLE, ATTR_NODE, ATTR_REUSED, ATTR_SECONDS, ATTR_SETTLED, ATTR_TIMING,
                                             ATTR_WORKER)

log = logging.getLogger("vitsearch.run")

MAX_ASKS_PER_SUGGEST = 64
#: asks in a row that found nothing to evaluate (settled, reused, duplicate) after which every ask takes a random
#: draw of the space not asked before, until one is evaluated: GP and NSGA-II learn from COMPLETE trials only, so a
#: sampler proposing near settled candidates keeps proposing them (docs/search.md: what the sampler is told)
RANDOM_AFTER = 16
#: random draws tried for one not asked before
RANDOM_TRIES = 32
#: seconds between storage reads while the study waits on trials RUNNING elsewhere
IDLE_POLL_S = 1.0


class CandidateSearch(OptunaSearch):
    """OptunaSearch that hands Tune batches of candidates and settles cheap ones itself.

    ``space``: a :class:`vitsearch.spaces.SearchSpace`; ``objectives``: (metric, direction)
    pairs; ``feasibility``: a :class:`vitsearch.search.engine.feasibility.Feasibility`;
    ``target``: completed trials wanted in the study; ``workers``: concurrent Tune trials
    (the last batches shrink so they finish together); ``on_settle(trial)`` is called after
    every tell (progress, tables). ``ladder``: the rungs (:class:`~vitsearch.search.engine.rungs.Ladder`;
    None: one rung); ``rung_dir``: where the rungs' checkpoints go; ``reference``: the
    uncompressed model's costs (:class:`~vitsearch.search.engine.gain.Reference`) for the
    driver-side no-gain check; ``on_rung(number, rung)`` after every promotion result;
    ``ownership``: an :class:`~vitsearch.search.engine.ownership.Ownership` (heartbeats,
    re-asking dead drivers' trials), or None; ``deadline`` (``time.time()`` seconds,
    settable later, with ``started``, when the budget began): no new work after it;
    ``finish_front``: the end of the search takes the front's candidates to the top rung.
    """

    def __init__(self, *, space, objectives: list[tuple[str, str]], feasibility, target: int, batch_size: int,
                 workers: int = 1, sampler: optuna.samplers.BaseSampler, storage, study_name: str,
                 on_settle: Callable[[optuna.trial.FrozenTrial], None] | None = None,
                 ladder: Ladder | None = None, rung_dir: str | None = None, reference=None,
                 on_rung: Callable[[int, int], None] | None = None, ownership=None, deadline: float | None = None,
                 finish_front: bool = False, seed: int | None = None):
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
        self.timings: list[dict] = []  # worker-side clocks of this attempt's evaluations (engine accounting)
        self.failures_in_a_row = 0
        self.max_failures_in_a_row = max(8, 2 * batch_size)
        self.last_error: str | None = None
        self.study_name = study_name
        self._distributions = space.distributions()  # what every ask draws from
        super().__init__(space=self._distributions, metric=[m for m, _ in objectives],
                         mode=["max" if d == "maximize" else "min" for _, d in objectives],
                         sampler=sampler, storage=storage, study_name=study_name)
        self.reference = reference
        self.promotions = Promotions(self.study, ladder, tuple(d == "maximize" for _, d in objectives),
                                     rung_dir, on_rung)
        self.clock = BudgetClock(self.promotions.ladder, self.workers, deadline)
        self.stopped_at_deadline = False
        self.finish_front = finish_front
        self._all_asked = False  # the study holds target candidates evaluated or running (any driver): its end
        self._reserve_told = False  # the log said once that the time budget's end is the front's
        if self._finishes:
            self.promotions.fits = self.clock.fits_in_time  # no promotion handed out that cannot finish in time
            self.clock.timed_before(self.study)
        self.idle_asks = 0  # asks in a row that found nothing to evaluate (a space exhausted by settled/reused)
        self._draws = random.Random(f"vitsearch-draws:{seed}")  # not the sampler's own stream (seeded alike)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study this searcher asks and tells."""
        return study_of(self)

    @property
    def told(self) -> set[int]:
        """Numbers of the trials settled by this searcher (this attempt)."""
        return set(self._told)

    # ---- counting --------------------------------------------------------------------
    def completed(self) -> int:
        """Candidates evaluated in the study, by every driver (COMPLETE, not reused): what ``--trials N`` counts."""
        return sharing.counts(self.study)["COMPLETE"]

    def idle(self) -> bool:
        """No batch, no promotion in flight."""
        return not self._batches and self.promotions.idle()

    # ---- Tune's Searcher API -----------------------------------------------------------
    def gave_up(self) -> bool:
        """Too many failures in a row: something is broken for every candidate."""
        return self.failures_in_a_row >= self.max_failures_in_a_row

    def suggest(self, trial_id: str) -> dict | str | None:
        self._refuse_detached()
        if self.gave_up():
            return Searcher.FINISHED
        if self.clock.passed():  # time budget spent: drain, then stop
            self.stopped_at_deadline = True
            return Searcher.FINISHED if self.idle() else None
        reserved = self._finishing()
        job = self.promotions.take(trial_id)
        if job is not None:  # ASHA: a due promotion first, alone in its batch (it is the long job)
            return {"candidates": [job]}
        if reserved:  # the last part of the time budget is the front's: no new candidate
            if self.idle() and self.promotions.due() is None:
                self.stopped_at_deadline = True  # the time budget ended the search
                return Searcher.FINISHED
            return None
        if time.monotonic() < self._idle_until:
            return None  # waiting on trials RUNNING elsewhere: read the storage at most every IDLE_POLL_S
        if self.ownership is not None:
            self.ownership.reap()  # dead drivers' trials: FAIL, and the same parameters WAITING again
        batch: list[tuple[optuna.Trial, Any]] = []
        shared = sharing.counts(self.study)  # every driver's trials: one storage read per suggest
        base = shared["COMPLETE"] + shared["RUNNING"]
        # Near the end, share what is left between the workers instead of handing it all to
        # the first free one (which left the other idle for up to a whole batch).
        size = min(self.batch_size, max(1, -(-(self.target - base) // self.workers)), self._fits_before_deadline())
        for _ in range(MAX_ASKS_PER_SUGGEST):
            if base + len(batch) >= self.target or self.exhausted():
                self._all_asked = True
                break
            if len(batch) >= size:
                break
            trial = None
            if self.idle_asks >= RANDOM_AFTER:
                self._draw_at_random()
            try:
                trial = (self.ownership.ask(self._distributions) if self.ownership is not None  # claimed, then drawn
                         else self.study.ask(fixed_distributions=self._distributions))
                config = self.vs_space.config_from_params(trial.params)
                key = config_key(config.to_dict())
                trial.set_user_attr(ATTR_CONFIG, key)  # written before the check reads the others' (sharing.py)
                verdict = sharing.verdict(self.study, trial, key, self.target)
            except optuna.exceptions.UpdateFinishedTrialError:
                # this driver was stopped mid-ask for longer than the grace period and another driver
                # failed the trial as stale (its retry is WAITING): nothing of it is this driver's now
                if trial is not None and self.ownership is not None:
                    self.ownership.release(trial)
                log.warning("a trial being asked was failed as stale by another driver meanwhile; asking again")
                continue
            if verdict.action == "surplus":
                self._settle(trial, None, TrialState.PRUNED, {ATTR_ERROR: verdict.why})
                break
            self.idle_asks += 1
            if verdict.action == "reuse":
                self._reuse(trial, verdict.source)
            elif verdict.action in ("duplicate", "failed"):  # running elsewhere, or failed for its config before
                self._settle(trial, None, TrialState.PRUNED, verdict.attrs())
            elif (reason := self._precheck(config)) is not None:
                self._settle(trial, None, TrialState.PRUNED, {
                    ATTR_FEASIBLE: False, ATTR_INFEASIBLE: reason.text, ATTR_EVAL: reason.metrics,
                    ATTR_CONSTRAINTS: reason.constraints, ATTR_SETTLED: reason.settled})
            else:
                self.idle_asks = 0
                batch.append((trial, config))
        if not batch:
            if self._all_asked and self._finishes:  # this suggest found the end: the front's promotions now
                self._finishing()
                if (job := self.promotions.take(trial_id)) is not None:
                    return {"candidates": [job]}
            if self.idle() and self.promotions.due() is None and (
                    self.exhausted() or self.completed() >= self.target):
                return Searcher.FINISHED
            # the rest is RUNNING (here or in another driver); if one dies its trial is asked again
            self._idle_until = time.monotonic() + IDLE_POLL_S
            return None
        self._batches[trial_id] = [t for t, _ in batch]
        return {"candidates": [self.promotions.first_job(t.number, c) for t, c in batch]}

    def _draw_at_random(self) -> None:
        """Enqueue a random draw of the space that no trial of the study asked before (the next ask takes it, as a
        WAITING trial): the sampler's last :data:`RANDOM_AFTER` or more proposals found nothing to evaluate."""
        known = {t.user_attrs.get(ATTR_CONFIG) for t in self.study.get_trials(deepcopy=False)}
        for _ in range(RANDOM_TRIES):
            params = {name: _draw(dist, self._draws) for name, dist in self._distributions.items()}
            if config_key(self.vs_space.config_from_params(params).to_dict()) not in known:
                self.study.enqueue_trial(params)
                log.info("the sampler's last %d proposals found nothing to evaluate (settled or repeated): the next "
                         "is drawn at random", self.idle_asks)
                return

    def _finishing(self) -> bool:
        """Whether the search is at its end (see the module's "Finishing the front"); sets the ladder's
        ``finishing`` and ``quotas``. True where the time left is reserved for the front (no new candidate)."""
        ladder = self.promotions.ladder
        if not self._finishes:
            return False
        reserved = self.clock.in_reserve()
        ladder.finishing, ladder.quotas = reserved or self._all_asked, not reserved
        if reserved and not self._reserve_told:
            self._reserve_told = True
            log.info("time budget: the last %.0f s finish the front (%d of its candidates below the top rung); "
                     "no new candidate", self.clock.left(), len(ladder.finishing_work()))
        return reserved

    @property
    def _finishes(self) -> bool:
        """``finish_front`` where there are rungs to finish (a study of one rung is plain)."""
        return self.finish_front and self.promotions.ladder.top > 0

    def _fits_before_deadline(self) -> int:
        """Candidates one batch can still evaluate before the deadline (:meth:`BudgetClock.batch_room
        <vitsearch.search.engine.clock.BudgetClock.batch_room>`): with ``finish_front``, before the front's reserve,
        and 0 where not one fits there; without a deadline, a whole batch."""
        room = self.clock.batch_room(self._finishes)
        return self.batch_size if room is None else room

    def exhausted(self) -> bool:
        """So many asks in a row were settled or reused that the space holds nothing new to evaluate."""
        return self.idle_asks >= max(256, 10 * self.target)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        text = result.get("candidate_json")
        if text is None:
            return
        payload = json.loads(text)
        if payload.get("rung", 0) > 0:
            self._promotion_result(trial_id, payload)
            return
        trial = self._find(trial_id, payload["number"])
        if trial is None or trial.number in self._told:
            return  # a retried batch re-reports what was already told
        timing = self._book_timing(payload)
        attrs = {ATTR_WORKER: payload.get("worker"), ATTR_NODE: payload.get("node"), ATTR_SECONDS: payload.get("seconds"),
                 ATTR_TIMING: timing or None}
        if payload.get("seconds") is not None:
            self.clock.record_first(payload["seconds"])
        if payload.get("error"):
            failed_for_good = payload.get("config_determined") or None  # sharing.verdict: not asked again
            self._settle(trial, None, TrialState.FAIL,
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
            self._settle(trial, None, TrialState.PRUNED, attrs)
            return
        values = self.feasibility.values(metrics, self.objectives)
        if self._settle(trial, values, TrialState.COMPLETE, attrs):  # dropped: no contender for a promotion
            self.promotions.remember_first(trial.number, self._key_of(trial), metrics, values,
                                           feasible=payload["feasible"] is not False)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._refuse_detached()
        if result and not error:
            self.on_trial_result(trial_id, result)
        outcome = self.promotions.worker_died(trial_id)  # a promotion whose worker died: not retried again
        if outcome is not None:
            self._count_failure(outcome.why)
        for trial in self._batches.pop(trial_id, []):
            if trial.number not in self._told:
                why = "the worker evaluating it failed (Ray actor died or the batch raised) after retries"
                self._settle(trial, None, TrialState.FAIL, {ATTR_ERROR: why})

    def save(self, checkpoint_path: str) -> None:  # state lives in the Optuna storage
        pass

    # ---- pickling --------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        """What Ray Tune pickles when the Tuner starts (its ``tuner.pkl``): the study's name, nothing live.

        The searcher's state lives in the Optuna storage and a resumed run reattaches to it
        (``vitsearch run --resume``), so its live objects (the sampler, which may hold locks
        or threads, the storage's connections, callbacks into the driver) are never pickled,
        whatever they hold. An unpickled copy refuses to search (:meth:`_refuse_detached`).
        """
        return {"study_name": self.study_name, "detached": True}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _refuse_detached(self) -> None:
        if self.__dict__.get("detached"):
            raise SearchStateError(
                f"a CandidateSearch of study {self.__dict__.get('study_name')!r} restored from a pickle cannot search: "
                "its state lives in the Optuna storage; resume the run with `vitsearch run --resume RUN_DIR`")

    def restore(self, checkpoint_path: str) -> None:
        pass

    # ---- internals -----------------------------------------------------------------------
    def _key_of(self, trial: optuna.Trial) -> str:
        return trial.user_attrs[ATTR_CONFIG]

    def _find(self, trial_id: str, number: int) -> optuna.Trial | None:
        return next((t for t in self._batches.get(trial_id, []) if t.number == number), None)

    def _reuse(self, trial: optuna.Trial, source: int) -> None:
        src = frozen_trial(self.study, source)
        attrs = {k: src.user_attrs.get(k) for k in (ATTR_EVAL, ATTR_FEASIBLE, ATTR_CONSTRAINTS, ATTR_INFEASIBLE,
                                                    ATTR_SETTLED)}
        attrs[ATTR_REUSED] = source
        # the source's state: a settled (PRUNED) config stays settled, with its measured constraints only
        self._settle(trial, list(src.values) if src.state == TrialState.COMPLETE else None, src.state, attrs)

    def _settle(self, trial: optuna.Trial, values, state: TrialState, attrs: dict) -> bool:
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
            self._told.add(trial.number)
            return False
        finally:
            if self.ownership is not None:
                self.ownership.release(trial)
        self._told.add(trial.number)
        if state == TrialState.FAIL:
            self._count_failure(attrs.get(ATTR_ERROR))
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

    # ---- rungs -----------------------------------------------------------------------------
    def _promotion_result(self, trial_id: str, payload: dict) -> None:
        outcome = self.promotions.result(trial_id, payload, lambda m: self.feasibility.values(m, self.objectives))
        if outcome is None:
            return  # a retried batch re-reports what was already recorded
        self._book_timing(payload)
        if payload.get("seconds") is not None and not outcome.failed:
            self.clock.record_rung(outcome.rung, payload["seconds"])
        if outcome.failed:
            self._count_failure(outcome.why)
        else:
            self.failures_in_a_row = 0

    def _book_timing(self, payload: dict) -> dict:
        """Keep a result's worker clocks for the engine's books; returns them."""
        timing = payload_timing(payload)
        if timing:
            self.timings.append({"worker": payload.get("worker"), "seconds": payload.get("seconds"), **timing})
        return timing

    def _count_failure(self, why: str | None) -> None:
        self.failures_in_a_row += 1
        self.last_error = why


class SearchStateError(VitsearchError):
    """A searcher used where its live state is gone (an unpickled copy)."""


@dataclass(frozen=True)
class Settled:
    """A candidate settled on its cost before any Tune trial: why, what is known, measured constraints."""

    text: str
    metrics: dict
    constraints: list[float]
    settled: str


def _draw(distribution, rng: random.Random):
    """One value of an Optuna ``distribution`` (the space's: categorical and integer), uniformly."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return rng.choice(distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution) and not distribution.log:
        return rng.randrange(distribution.low, distribution.high + 1, distribution.step)
    raise TypeError(f"no random draw for {distribution!r}")
