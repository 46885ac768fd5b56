"""Trials owned by their driver: heartbeats, and the trials of dead drivers asked again.

Several drivers may run one study (a shared PostgreSQL storage), and a killed driver is
resumed beside drivers that are still running. A RUNNING trial therefore belongs to the
driver that asked it, and only a driver that really died loses its trials:

* **Heartbeats** (RDB storages: SQLite, PostgreSQL): a thread of each driver records a
  heartbeat every ``HEARTBEAT_S`` seconds for each trial it owns; Optuna's
  ``fail_stale_trials`` fails the trials whose owner has been silent for ``GRACE_S`` and
  calls :class:`RetryStale` for each, which enqueues the same parameters again
  (presets included) as a WAITING trial, asked before anything new.
* **Same machine, sooner**: every trial records its driver (host, pid, process start
  time); a trial whose driver ran on this host and is gone is failed and re-enqueued at
  once, without waiting out the grace period. This is also what covers journal storages,
  which have no heartbeat in Optuna.
* **Orphans**: a trial left RUNNING with no driver recorded (its driver died between
  Optuna's ask and the first write) is treated as stale once it is older than
  ``ORPHAN_S``. :meth:`Ownership.ask` keeps that window short: the trial is claimed
  before the sampler draws its parameters. Asked with its distributions, a trial was
  claimed only after sampling (TPE's, tens of ms to a second on a long study), and a
  driver killed then left an orphan that its resume waited a minute for (1 kill in 7 in
  the suite's resume tests).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
import warnings
from datetime import datetime, timedelta

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from vitsearch.search.engine.optuna_access import trial_id
from vitsearch.search.results.tables import ATTR_CONFIG, ATTR_DRIVER
from vitsearch.search.storage import GRACE_S, HEARTBEAT_S

log = logging.getLogger("vitsearch.run")

#: a RUNNING trial with no driver recorded is stale after this long
ORPHAN_S = 3 * GRACE_S
#: how many times one trial is asked again after its driver died
MAX_RETRY = 3


def draw(trial: optuna.Trial, name: str, dist: BaseDistribution):
    """``trial``'s value of parameter ``name`` drawn from ``dist`` through the public suggest API (what
    ``Study.ask(fixed_distributions=...)`` does for each)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"parameter {name!r}: no suggest method for {type(dist).__name__}")


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def driver_id(pid: int | None = None) -> str:
    """``host:pid:start`` of this process (or ``pid``): who owns a trial."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def driver_alive(owner: str) -> bool | None:
    """Whether the driver ``owner`` still runs; None when it ran on another host (ask its heartbeat)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    return _start_ticks(int(parts[1])) == parts[2]


class RetryStale(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry callback: the failed trial's parameters enqueued again, WAITING.

    Only the config key travels with the retry (not the dead driver's id or
    half-written results); ``retried_trial_number`` / ``retry_history`` link it to the
    original, and the trial table names the retry in the failed trial's error column.
    """

    def __init__(self, max_retry: int | None = MAX_RETRY):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        kept = copy.copy(trial)
        kept.user_attrs = {k: v for k, v in trial.user_attrs.items() if k == ATTR_CONFIG}
        log.info("trial %d: its driver %s stopped; asked again (same parameters)", trial.number,
                 trial.user_attrs.get(ATTR_DRIVER, "(not recorded)"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__call__(study, kept)


class Ownership:
    """This driver's trials: their heartbeats, and the stale trials of other drivers re-asked.

    ``storage`` is the raw storage the study was opened on (heartbeats are recorded where
    the storage supports them). Thread-safe: Tune's callbacks add and drop trials while
    the heartbeat thread beats for them.
    """

    def __init__(self, study: optuna.Study, storage, retry: RetryStale | None = None):
        self.study = study
        self.storage = storage
        self.retry = retry or RetryStale()
        self.me = driver_id()
        self._owned: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reaped_at = 0.0
        self.heartbeats = getattr(storage, "get_heartbeat_interval", lambda: None)() is not None

    def __getstate__(self) -> dict:
        # Tune pickles the search algorithm (tuner.pkl): only the driver's live copy beats and reaps.
        return {"me": self.me, "heartbeats": False}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _owned=set(), _lock=threading.Lock(), _stop=threading.Event(), _thread=None,
                             _reaped_at=0.0, study=None, storage=None, retry=None)

    # ---- owning ------------------------------------------------------------------------
    def ask(self, distributions: dict[str, BaseDistribution]) -> optuna.Trial:
        """A new trial of the study, claimed (:meth:`own`), then its parameters drawn from ``distributions``:
        a driver killed while the sampler works leaves a trial that names it, asked again at once on resume."""
        trial = self.study.ask()
        try:
            self.own(trial)
            for name, dist in distributions.items():
                draw(trial, name, dist)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile (this driver was stopped)
            self.release(trial)
            raise
        return trial

    def own(self, trial: optuna.Trial) -> None:
        """Claim a freshly asked trial: a first heartbeat, then its driver recorded.

        In this order a driver killed between the two leaves a trial that every driver reaps
        (stale after ``GRACE_S``, or an orphan); named first, with no heartbeat row, it would
        be reaped by none but a driver on its own host (Optuna's stale check skips trials
        that never beat).
        """
        with self._lock:
            self._owned.add(trial_id(trial))
        if self.heartbeats:
            self.storage.record_heartbeat(trial_id(trial))
        trial.set_user_attr(ATTR_DRIVER, self.me)

    def release(self, trial: optuna.Trial) -> None:
        """The trial is told: no more heartbeats for it."""
        with self._lock:
            self._owned.discard(trial_id(trial))

    def start(self) -> None:
        """Beat for the owned trials every HEARTBEAT_S seconds until :meth:`close`."""
        if self.heartbeats and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="vitsearch-heartbeat", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop beating (the run ended; trials still owned go stale for the next driver)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                owned = list(self._owned)
            for owned_id in owned:
                try:
                    self.storage.record_heartbeat(owned_id)
                except Exception as exc:  # a lost connection: the next beat retries; grace covers the gap
                    log.warning("heartbeat for trial id %d failed: %s", owned_id, exc)

    # ---- reaping -----------------------------------------------------------------------
    def reap(self, force: bool = False) -> list[int]:
        """Fail and re-enqueue the trials of dead drivers; at most every HEARTBEAT_S seconds unless ``force``.

        Returns the numbers of the trials failed here (and asked again).
        """
        if not force and time.monotonic() - self._reaped_at < HEARTBEAT_S:
            return []
        self._reaped_at = time.monotonic()
        before = {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        if self.heartbeats:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # Optuna calls RetryStale for each
        now = datetime.now()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get(ATTR_DRIVER)
            dead = (driver_alive(owner) is False if owner
                    else t.datetime_start is not None and now - t.datetime_start > timedelta(seconds=ORPHAN_S))
            if dead and trial_id(t) not in self._owned:
                self._fail_and_retry(t)
        return sorted({t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)

    def requeue_mine(self) -> list[int]:
        """Fail this driver's trials still RUNNING and enqueue each again (same parameters); their numbers.

        For a driver stopped by a signal: what it had in flight is asked again on ``--resume``.
        """
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get(ATTR_DRIVER) == self.me]
        for t in mine:
            self._fail_and_retry(t)
        return [t.number for t in mine]

    def _fail_and_retry(self, trial: FrozenTrial) -> None:
        try:
            if not self.storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another driver reaped it (or it finished) first
        self.retry(self.study, self.storage.get_trial(trial_id(trial)))
