"""Ray Tune's OptunaSearch, adapted to a compression study.

What this adapter adds to ``ray.tune.search.optuna.OptunaSearch``:

* **Batches.** One Tune trial evaluates a batch of Optuna trials (candidates) and
  reports each as it finishes; Tune's per-trial overhead is paid
  once per batch, not per candidate.
* **What Optuna is told.** A :class:`~vitsearch.search.engine.teller.Teller` tells each
  asked trial once: cheap ones at once, without a Tune trial, the rest from their
  worker's result (only measured values; nothing swallowed).
* **Rungs.** With ``recovery.rungs`` a free worker first takes a promotion that is due
  (:mod:`vitsearch.search.engine.rungs` decides, :mod:`vitsearch.search.engine.promotions`
  keeps the book in the storage), alone in its batch, else new candidates. A trial is
  told once, at its first rung (the fidelity every candidate shares); its later rungs are
  study user attributes, so a resumed driver re-runs the lost ones and promotes nothing
  twice.
* **Asking.** An :class:`~vitsearch.search.engine.asking.Asker` asks each trial, and
  draws one at random while the sampler is stuck on settled candidates.
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
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from vitsearch.search.engine import sharing
from vitsearch.search.engine.asking import Asker
from vitsearch.search.engine.clock import BudgetClock
from vitsearch.spaces.errors import VitsearchError
from vitsearch.search.engine.optuna_access import study_of
from vitsearch.search.engine.promotions import Promotions
from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.engine.teller import Teller
from vitsearch.search.results.tables import ATTR_ERROR

log = logging.getLogger("vitsearch.run")

MAX_ASKS_PER_SUGGEST = 64
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
        self.ownership = ownership
        self._idle_until = 0.0
        self._batches: dict[str, list[optuna.Trial]] = {}
        self.max_failures_in_a_row = max(8, 2 * batch_size)
        self.study_name = study_name
        self._distributions = space.distributions()  # what every ask draws from
        super().__init__(space=self._distributions, metric=[m for m, _ in objectives],
                         mode=["max" if d == "maximize" else "min" for _, d in objectives],
                         sampler=sampler, storage=storage, study_name=study_name)
        self.reference = reference
        self.promotions = Promotions(self.study, ladder, tuple(d == "maximize" for _, d in objectives),
                                     rung_dir, on_rung)
        self.clock = BudgetClock(self.promotions.ladder, self.workers, deadline)
        self.teller = Teller(self.study, feasibility=feasibility, objectives=objectives, reference=reference,
                             promotions=self.promotions, clock=self.clock, ownership=ownership, on_settle=on_settle)
        self.stopped_at_deadline = False
        self.finish_front = finish_front
        self._all_asked = False  # the study holds target candidates evaluated or running (any driver): its end
        self._reserve_told = False  # the log said once that the time budget's end is the front's
        if self._finishes:
            self.promotions.fits = self.clock.fits_in_time  # no promotion handed out that cannot finish in time
            self.clock.timed_before(self.study)
        self.idle_asks = 0  # asks in a row that found nothing to evaluate (a space exhausted by settled/reused)
        self.asker = Asker(self.study, space, self._distributions, ownership, seed)

    @property
    def study(self) -> optuna.Study:
        """The Optuna study this searcher asks and tells."""
        return study_of(self)

    @property
    def told(self) -> set[int]:
        """Numbers of the trials settled by this searcher (this attempt)."""
        return set(self.teller.told)

    @property
    def timings(self) -> list[dict]:
        """Worker-side clocks of this attempt's evaluations (the engine's accounting)."""
        return self.teller.timings

    @property
    def failures_in_a_row(self) -> int:
        """Failed trials and promotions since the last COMPLETE trial or promotion that did not fail."""
        return self.teller.failures_in_a_row

    @property
    def last_error(self) -> str | None:
        """The last failure's error."""
        return self.teller.last_error

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
            asked = self.asker.ask(self.target, self.idle_asks)
            if asked is None:  # failed as stale by another driver while asked: ask again
                continue
            trial, config, verdict = asked
            if verdict.action == "surplus":
                self.teller.settle(trial, None, TrialState.PRUNED, {ATTR_ERROR: verdict.why})
                break
            self.idle_asks += 1
            if not self.teller.tell_at_once(trial, verdict, config):  # reused, or settled on its cost: told
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
            self.teller.promotion_result(trial_id, payload)
            return
        trial = self._find(trial_id, payload["number"])
        if trial is None or trial.number in self.teller.told:
            return  # a retried batch re-reports what was already told
        self.teller.first_result(trial, payload)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self._refuse_detached()
        if result and not error:
            self.on_trial_result(trial_id, result)
        outcome = self.promotions.worker_died(trial_id)  # a promotion whose worker died: not retried again
        if outcome is not None:
            self.teller.count_failure(outcome.why)
        for trial in self._batches.pop(trial_id, []):
            if trial.number not in self.teller.told:
                why = "the worker evaluating it failed (Ray actor died or the batch raised) after retries"
                self.teller.settle(trial, None, TrialState.FAIL, {ATTR_ERROR: why})

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
    def _find(self, trial_id: str, number: int) -> optuna.Trial | None:
        return next((t for t in self._batches.get(trial_id, []) if t.number == number), None)


class SearchStateError(VitsearchError):
    """A searcher used where its live state is gone (an unpickled copy)."""
