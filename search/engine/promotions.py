"""The searcher's rung book: promotions handed out, their results and failures, kept in the Optuna storage.

:class:`~vitsearch.search.engine.rungs.Ladder` decides *which* candidate earns more
steps; this module is where those decisions meet the study. A trial is told to Optuna
once, at its first rung; its later rungs are study user attributes (``rung:N:K``, with
values and evaluation), each promotion is marked (``promoted:N:K``) in the storage before
any worker starts it, with the driver that issued it, and a failed one is recorded
(``rung_failed:N:K``). So a driver that resumes (or joins) the study rebuilds the ladder
from the storage and re-runs a promotion without result only when its issuer is gone:
one issued by another driver still running on this machine is left to it (its result is
read from the storage once that driver has ended); one issued by a driver on another
machine, whose life cannot be seen from here, is run again by a driver that finds it
on starting (at worst the same record is written twice). A mark is written as a
compare-and-set under the study's mutex (:func:`~vitsearch.search.engine.mutex.study_mutex`):
of two drivers that find the same promotion due at the same moment, or the same dead
driver's promotion lost, one marks and runs it, the other finds the mark and leaves it.
Checkpoints (``RUN/rungs/trial-N-rung-K.pt``) carry a candidate's weights from one rung
to the next.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from vitsearch.search.engine.ownership import driver_alive, driver_id
from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.engine.mutex import study_mutex
from vitsearch.search.engine.optuna_access import storage_of
from vitsearch.search.results.tables import (ATTR_CONFIG, ATTR_CONSTRAINTS, ATTR_EVAL, ATTR_FEASIBLE, ATTR_INFEASIBLE,
                                             ATTR_REUSED, ATTR_SECONDS, ATTR_TIMING, ATTR_WORKER, STUDY_PROMOTED,
                                             STUDY_RUNG, STUDY_RUNG_FAILED, rung_attrs)

log = logging.getLogger("vitsearch.run")

#: worker-side clock fields a result payload may carry (engine accounting)
TIMING_FIELDS = ("started_at", "finished_at", "cpu_seconds", "process_cpu_seconds")


def config_key(config_dict: dict) -> str:
    """Canonical JSON of a config: equal configs, equal keys."""
    return json.dumps(config_dict, sort_keys=True)


def is_identity(key: str) -> bool:
    """The uncompressed model's config: the teacher itself, never distilled."""
    return not {k for k in json.loads(key) if k != "schema_version"}


def _issuers(attrs: dict, me: str) -> dict[tuple[int, int], str]:
    """Promotions marked in the study's ``attrs`` by another driver than ``me`` -> that driver's id."""
    out = {}
    for key, value in attrs.items():
        kind, _, rest = key.partition(":")
        if kind == STUDY_PROMOTED and rest.count(":") == 1:
            owner = _owner(value)
            if owner and owner != me:
                out[tuple(int(x) for x in rest.split(":"))] = owner
    return out


def _owner(mark) -> str:
    """The driver a ``promoted:N:K`` mark names ("" for none: an issuer of an older version, or no mark)."""
    return (mark.get("driver") or "") if isinstance(mark, dict) else ""


def payload_timing(payload: dict) -> dict:
    """The worker clocks a result payload carries (empty when none)."""
    return {k: payload[k] for k in TIMING_FIELDS if payload.get(k) is not None}


@dataclass(frozen=True)
class RungOutcome:
    """A promotion's result as recorded: ``failed`` with ``why``, else recorded at (number, rung)."""

    number: int
    rung: int
    failed: bool
    why: str | None = None


class Promotions:
    """Promotions of one study, as this driver sees and hands them out.

    ``study``: the Optuna study (its user attributes hold the later rungs); ``ladder``: the
    :class:`Ladder` (None: one rung of 0 steps); ``maximize``: per objective, for the
    default ladder; ``rung_dir``: where checkpoints go (None: none kept); ``on_rung(number,
    rung)`` after every promotion result or failure; ``me``: this driver's id, and
    ``alive(driver id)``: whether another driver still runs (True / False, None: cannot
    tell - another machine), both from :mod:`~vitsearch.search.engine.ownership` by default.
    """

    def __init__(self, study: optuna.Study, ladder: Ladder | None, maximize: tuple[bool, ...],
                 rung_dir: str | None = None, on_rung: Callable[[int, int], None] | None = None,
                 me: str | None = None, alive: Callable[[str], bool | None] = driver_alive):
        self.study = study
        self.ladder = ladder or Ladder((0,), 2.0, maximize)
        self.rung_dir, self.on_rung = rung_dir, on_rung
        self.me, self.alive = me or driver_id(), alive
        self.in_flight: dict[str, tuple[int, int]] = {}  # Tune trial id -> promotion (number, rung)
        #: (number, rung) -> whether that promotion can still finish in time (None: every one can); one that
        #: cannot is neither due nor handed out
        self.fits: Callable[[int, int], bool] | None = None
        # promotions other drivers issued -> (their driver id, trusted when its life cannot be seen: it was
        # issued while this driver ran, so by a driver alive then)
        self._issuer: dict[tuple[int, int], tuple[str, bool]] = {}
        self._gone: dict[tuple[int, int], str] = {}  # lost promotions -> the issuer they were judged lost from
        self._stalled = False  # the last claim found the study's mutex held past its timeout (logged once)
        self._first: dict[int, tuple[str, dict]] = {}  # trial number -> (config key, first-rung metrics)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get(ATTR_REUSED) is None:
                self.remember_first(t.number, t.user_attrs[ATTR_CONFIG], t.user_attrs[ATTR_EVAL], list(t.values),
                                    feasible=t.user_attrs.get(ATTR_FEASIBLE) is not False)
        self._restore()
        try:  # a mutex file that cannot be made is refused now, not at the first promotion
            with study_mutex(storage_of(study), study.study_name):
                pass
        except TimeoutError:
            pass

    def idle(self) -> bool:
        """No promotion of this driver in flight."""
        return not self.in_flight

    def remember_first(self, number: int, key: str, metrics: dict, values: list[float], feasible: bool = True) -> None:
        """A candidate evaluated at the first rung: a contender for promotion."""
        self._first[number] = (key, metrics)
        self.ladder.record(number, 0, values, feasible)
        if is_identity(key):
            self.ladder.held.add(number)

    def first_job(self, number: int, config) -> dict:
        """The worker's job for a new candidate (first rung, its checkpoint kept for a promotion)."""
        key = config_key(config.to_dict())
        return {"number": number, "config": config.to_dict(), "rung": 0,
                "save_to": None if is_identity(key) else self._checkpoint(number, 0)}

    def due(self) -> tuple[int, int] | None:
        """The promotion that would be handed out now, without issuing it."""
        lost = self._fitting(self._lost())
        if lost:
            return lost[0]
        due = self._fitting(self.ladder.promotable())
        return due[0] if due else None

    def _fitting(self, promotions: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return promotions if self.fits is None else [p for p in promotions if self.fits(*p)]

    def take(self, trial_id: str) -> dict | None:
        """A promotion's job for Tune trial ``trial_id`` (marked issued in the storage first), or None."""
        promotion = self._next()
        if promotion is None:
            return None
        self.in_flight[trial_id] = promotion
        number, rung = promotion
        key, first = self._first[number]
        return {"number": number, "config": json.loads(key), "rung": rung, "first": first,
                "load_from": self._checkpoint(number, rung - 1), "save_to": self._checkpoint(number, rung)}

    def result(self, trial_id: str, payload: dict, values_of: Callable[[dict], list[float]]) -> RungOutcome | None:
        """Record a promotion's result (``values_of(metrics)``: its objective values); None for a re-report."""
        number, rung = payload["number"], payload["rung"]
        if self.in_flight.get(trial_id) != (number, rung):
            return None  # a retried batch re-reports what was already recorded
        del self.in_flight[trial_id]
        if payload.get("error"):
            return self.failed(number, rung, payload["error"])
        metrics = payload["evaluation"]
        values = values_of(metrics)
        record = {"values": values, ATTR_EVAL: metrics, ATTR_FEASIBLE: payload["feasible"],
                  ATTR_INFEASIBLE: payload.get("infeasible_reason"), ATTR_CONSTRAINTS: payload["constraints"],
                  ATTR_WORKER: payload.get("worker"), ATTR_SECONDS: payload.get("seconds"),
                  ATTR_TIMING: payload_timing(payload)}
        self.study.set_user_attr(f"{STUDY_RUNG}:{number}:{rung}", record)
        self.ladder.record(number, rung, values, payload["feasible"] is not False)
        if self.on_rung is not None:
            self.on_rung(number, rung)
        return RungOutcome(number, rung, failed=False)

    def worker_died(self, trial_id: str) -> RungOutcome | None:
        """The promotion Tune trial ``trial_id`` ran, failed for good (its worker died after retries), or None."""
        if trial_id not in self.in_flight:
            return None
        number, rung = self.in_flight.pop(trial_id)
        return self.failed(number, rung, "the worker evaluating it failed (Ray actor died or the batch raised) "
                                         "after retries")

    def failed(self, number: int, rung: int, why: str) -> RungOutcome:
        """Record a failed promotion (never retried: it stays at its last rung)."""
        self.ladder.record_failure(number, rung)
        self.study.set_user_attr(f"{STUDY_RUNG_FAILED}:{number}:{rung}", why)
        if self.on_rung is not None:
            self.on_rung(number, rung)
        return RungOutcome(number, rung, failed=True, why=why)

    # ---- internals -----------------------------------------------------------------------
    def _restore(self) -> None:
        """The ladder as the storage has it: first rungs from the trials, later ones from study attrs."""
        attrs = self.study.user_attrs
        records, issued, failed = rung_attrs(attrs)
        self.ladder.issued |= {p for p in issued if p[1] <= self.ladder.top}
        self._issuer.update({p: (owner, False) for p, owner in _issuers(attrs, self.me).items()})
        for number, rung in failed:
            self.ladder.record_failure(number, rung)
        for number, by_rung in records.items():
            for rung, record in sorted(by_rung.items()):
                if rung <= self.ladder.top and (number, rung) in self.ladder.issued:
                    self.ladder.record(number, rung, record["values"], record.get(ATTR_FEASIBLE) is not False)

    def _checkpoint(self, number: int, rung: int) -> str | None:
        # one rung of N > 0 steps too: the front's test accuracy then loads the weights instead of distilling again
        if self.rung_dir is None or self.ladder.steps[-1] == 0:
            return None
        return f"{self.rung_dir}/trial-{number}-rung-{rung}.pt"

    def _next(self) -> tuple[int, int] | None:
        """A promotion to hand out now: one lost by an earlier driver first, else a new one (marked issued)."""
        for promotion in self._fitting(self._lost()):
            claimed = self._claim(promotion, lost=True)
            if claimed is not False:  # claimed, or the mutex is held by a stopped driver: no more tries now
                return promotion if claimed else None
        attrs = None
        for number, rung in self._fitting(self.ladder.promotable()):
            if attrs is None:  # one read for the scan: what another driver marked already is passed over here
                attrs = self.study.user_attrs
            self.ladder.issue(number, rung)
            mark = attrs.get(f"{STUDY_PROMOTED}:{number}:{rung}")
            if mark is not None:  # another driver issued it: its to run
                self._issuer[(number, rung)] = (_owner(mark), True)
                continue
            claimed = self._claim((number, rung), lost=False)
            if claimed is not False:
                return (number, rung) if claimed else None
        return None

    def _claim(self, promotion: tuple[int, int], lost: bool) -> bool | None:
        """Mark ``promotion`` as issued by this driver, unless another live driver holds it (a compare-and-set).

        In the storage before any worker starts it, so a killed driver's successor re-runs
        it. A new promotion is claimed only while unmarked; a lost one only while its mark
        still names the issuer it was judged lost from (or this driver); neither once its
        result or failure is in (then read). A mark found in the way names the driver that
        runs it: issued while this driver ran, so trusted. None when the mutex was not
        acquired in time (its holder is stopped; logged once): the promotion, issued but
        unmarked, is tried again as lost.
        """
        number, rung = promotion
        key = f"{STUDY_PROMOTED}:{number}:{rung}"
        try:
            with study_mutex(storage_of(self.study), self.study.study_name):
                attrs = self.study.user_attrs  # read under the mutex: no driver writes between this and ours
                if self._read_outcome(attrs, promotion):
                    return False
                mark = attrs.get(key)
                owner = _owner(mark)
                if mark is None or (lost and owner in (self._gone.get(promotion, ""), self.me)):
                    self.study.set_user_attr(key, {"at": time.time(), "driver": self.me})
                    self._gone.pop(promotion, None)
                    self._stalled = False
                    return True
        except TimeoutError as exc:
            if not self._stalled:
                log.warning("%s: promotions wait until it is free (trial %d to rung %d first)", exc, number, rung)
            self._stalled = True
            return None
        self._stalled = False
        self._issuer[promotion] = (owner, True)
        return False

    def _read_outcome(self, attrs: dict, promotion: tuple[int, int]) -> bool:
        """Whether the study's ``attrs`` hold ``promotion``'s result or failure (recorded in the ladder when so)."""
        number, rung = promotion
        record = attrs.get(f"{STUDY_RUNG}:{number}:{rung}")
        if f"{STUDY_RUNG_FAILED}:{number}:{rung}" in attrs:
            self.ladder.record_failure(number, rung)
        elif record is not None:
            self.ladder.record(number, rung, record["values"], record.get(ATTR_FEASIBLE) is not False)
        else:
            return False
        return True

    def _lost(self) -> list[tuple[int, int]]:
        """Issued promotions without result that nobody alive will finish: ours to run.

        One another driver issued is left to it while it runs; once it has ended, its
        result (or failure) is read from the storage, and only a promotion without either
        is run again. An issuer on another machine (or of an older run, not named) cannot
        be seen: its promotion is run again, unless it was issued while this driver ran
        (then its issuer was alive, and is trusted to finish it, as before).
        """
        lost = self.ladder.lost(set(self.in_flight.values()))
        others = [p for p in lost if p in self._issuer]
        if not others:
            return lost
        gone = set()
        for p in others:
            owner, trusted = self._issuer[p]
            alive = self.alive(owner) if owner else None
            if alive is False or (alive is None and not trusted):
                gone.add(p)
        if gone:  # they may have finished before they ended: read what they wrote
            attrs = self.study.user_attrs
            for p in gone:
                self._read_outcome(attrs, p)
                self._gone[p] = self._issuer.pop(p)[0]
        live = set(others) - gone
        return [p for p in self.ladder.lost(set(self.in_flight.values())) if p not in live]
