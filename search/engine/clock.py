"""The time budget's clock: how much of a study's time is left for new candidates, and how much is the front's.

With a time budget the searcher has a ``deadline`` and asks this clock two questions as it
nears. How many new candidates can one batch still evaluate? The recent first-rung
evaluations say, by their 90th percentile (:meth:`BudgetClock.first_rung_seconds`): a
batch must fit its slow candidates, not the cheap ones settled on their cost. And, with
``finish_front``, how much of the end is the *reserve*, kept for the front's candidates
left below the top rung (:meth:`BudgetClock.finish_reserve`)? The rungs they still have
to run, each priced by the worker seconds promotions to it took so far (before any, the
nearest lower rung's, scaled by the steps each adds: :meth:`BudgetClock.rung_cost`), each
candidate's rungs one after another, shared by the workers, given :data:`FINISH_MARGIN`
more time and capped at :data:`FINISH_SHARE` of the budget. In the reserve no new
candidate is asked; at any time, no promotion is handed out that cannot finish before
the deadline (:meth:`BudgetClock.fits_in_time`).

Worker seconds against wall time, no Ray: the searcher feeds the clock each result's
seconds, and on resume the study's earlier ones (:meth:`BudgetClock.timed_before`); the
front and the rungs' steps it reads from the searcher's
:class:`~vitsearch.search.engine.rungs.Ladder`. Without a deadline nothing is limited.
"""

from __future__ import annotations

import itertools
import statistics
import time

import optuna
from optuna.trial import TrialState

from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.results.tables import ATTR_REUSED, ATTR_SECONDS, rung_attrs

#: at most this share of a time budget is kept for finishing the front (its end)
FINISH_SHARE = 0.25
#: the front's remaining rungs, as estimated from the rung times so far, are given this much more time
FINISH_MARGIN = 1.25


def high_percentile(seconds: list[float]) -> float | None:
    """The 90th percentile of ``seconds`` (inclusive quantiles; the value itself for one, None for none)."""
    if not seconds:
        return None
    return seconds[0] if len(seconds) == 1 else statistics.quantiles(seconds, n=10, method="inclusive")[-1]


def chains_seconds(chains: list[list[float]], left: float, workers: int) -> float:
    """Seconds ``workers`` take to run ``chains`` (per candidate, the seconds of the rungs it still has to run, one
    after another), with :data:`FINISH_MARGIN`: the longer of all shared out and the longest chain. Of each chain
    only the rungs that end within ``left`` seconds count (no time is kept for what cannot run); 0 for none."""
    fitting = [[c for c, done in zip(chain, itertools.accumulate(chain)) if FINISH_MARGIN * done <= left]
               for chain in chains]
    fitting = [row for row in fitting if row]
    if not fitting:
        return 0.0
    return FINISH_MARGIN * max(sum(map(sum, fitting)) / workers, max(map(sum, fitting)))


class BudgetClock:
    """One study's time budget as one driver sees it, and the estimates drawn from the worker seconds so far.

    ``ladder``: the study's rungs (the front, the steps); ``workers``: concurrent Tune trials, which share the
    front's remaining rungs; ``deadline`` and ``started`` (``time.time()`` seconds; ``started`` defaults to
    now): when the budget ends and began, settable later (the driver sets both once Ray is up); no deadline,
    no budget. Plain data: it pickles whole.
    """

    def __init__(self, ladder: Ladder, workers: int, deadline: float | None = None):
        self.ladder = ladder
        self.workers = workers
        self.deadline, self.started = deadline, time.time()
        self.first_seconds: list[float] = []  # worker seconds of first-rung evaluations (batch sizing, the end)
        self.rung_seconds: dict[int, list[float]] = {}  # rung -> worker seconds of promotions to it (the front's end)

    def passed(self) -> bool:
        """Whether the deadline has come (never without one)."""
        return self.deadline is not None and time.time() >= self.deadline

    def left(self) -> float:
        """Seconds until the deadline (negative past it); only with a deadline."""
        return self.deadline - time.time()

    # ---- worker seconds --------------------------------------------------------------------
    def record_first(self, seconds: float) -> None:
        """A first-rung evaluation took ``seconds`` of a worker's time."""
        self.first_seconds.append(seconds)

    def record_rung(self, rung: int, seconds: float) -> None:
        """A promotion to ``rung`` took ``seconds`` of a worker's time."""
        self.rung_seconds.setdefault(rung, []).append(seconds)

    def timed_before(self, study: optuna.Study) -> None:
        """Record the worker seconds of ``study``'s evaluations so far, reused ones excepted (a resumed run's reserve
        and batch sizes)."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get(ATTR_REUSED) is None and t.user_attrs.get(ATTR_SECONDS) is not None:
                self.record_first(t.user_attrs[ATTR_SECONDS])
        records, _, _ = rung_attrs(study.user_attrs)
        for by_rung in records.values():
            for rung, record in by_rung.items():
                if record.get(ATTR_SECONDS) is not None:
                    self.record_rung(rung, record[ATTR_SECONDS])

    # ---- estimates ---------------------------------------------------------------------------
    def first_rung_seconds(self) -> float | None:
        """The 90th percentile of the recent first-rung evaluations' worker seconds (None: none yet)."""
        # the 90th percentile, not the median: candidates settled on their cost take seconds and
        # evaluated ones a minute or more at a high first rung; batches sized by the median of that
        # mix overran a 5-minute budget by 5 minutes (the fidelity benchmark's "full")
        return high_percentile(self.first_seconds[-32:])

    def rung_cost(self, rung: int) -> float | None:
        """Worker seconds one promotion to ``rung`` takes: the median of those timed so far; before any, the
        nearest lower rung's median timed (the first rung's 90th percentile: it also measures latency) scaled by
        the steps each adds; None where nothing is known (or the first rung has no steps to scale)."""
        steps = self.ladder.steps
        if self.rung_seconds.get(rung):
            return statistics.median(self.rung_seconds[rung])
        for lower in range(rung - 1, -1, -1):
            seconds = statistics.median(self.rung_seconds[lower]) if lower and self.rung_seconds.get(lower) \
                else self.first_rung_seconds() if lower == 0 else None
            added = steps[lower] - (steps[lower - 1] if lower else 0)
            if seconds is not None and added > 0:
                return seconds * max(1.0, (steps[rung] - steps[rung - 1]) / added)
        return None

    def finish_reserve(self) -> float:
        """Seconds the front's remaining rungs take (0: none, or nothing timed yet) by :meth:`rung_cost`, shared
        between the workers, each candidate's rungs one after another (:func:`chains_seconds`); with
        :data:`FINISH_MARGIN`, at most :data:`FINISH_SHARE` of the budget."""
        if self.deadline is None:
            return 0.0
        left = self.left()
        chains = [[self.rung_cost(k) for k in rungs] for rungs in self.ladder.finishing_work()]
        if any(c is None for chain in chains for c in chain):
            return 0.0
        return min(chains_seconds(chains, left, self.workers), FINISH_SHARE * max(0.0, self.deadline - self.started))

    def in_reserve(self) -> bool:
        """Whether the time left is the front's: :meth:`finish_reserve` or less, or so little more that not one
        new candidate fits before it (never without a deadline)."""
        reserve = self.finish_reserve()
        return self.deadline is not None and (self.left() <= reserve or self.batch_room(True, reserve) == 0)

    def batch_room(self, keep_reserve: bool, reserve: float | None = None) -> int | None:
        """Candidates one batch can still evaluate before the deadline, by :meth:`first_rung_seconds` (None: no
        deadline, no limit; 1 until a first rung is timed). ``keep_reserve``: before the front's reserve too
        (``reserve``: already computed, else :meth:`finish_reserve`), and 0 where not one fits there."""
        if self.deadline is None:
            return None
        per = self.first_rung_seconds()
        if per is None:
            return 1
        if not keep_reserve:
            return max(1, int((self.deadline - time.time()) // max(per, 1e-3)))
        reserve = self.finish_reserve() if reserve is None else reserve
        return max(0, int((self.deadline - time.time() - reserve) // max(per, 1e-3)))

    def fits_in_time(self, number: int, rung: int) -> bool:
        """Whether a promotion of ``number`` to ``rung`` can finish before the deadline, by :meth:`rung_cost`
        (unknown, or no deadline: yes); the signature of :attr:`Promotions.fits
        <vitsearch.search.engine.promotions.Promotions.fits>`."""
        cost = self.rung_cost(rung) if self.deadline is not None else None
        return cost is None or time.time() + FINISH_MARGIN * cost <= self.deadline
