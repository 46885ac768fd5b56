"""Rungs of distillation: which candidates earn more steps, decided as results arrive.

Multi-objective asynchronous successive halving (ASHA with non-dominated sorting):
every candidate is scored at the first rung; a rung holding ``n`` results may promote its
best ``floor(n / reduction)`` to the next rung, "best" by non-dominated sorting on the
study's objectives at that rung (accuracy up, latency/size down), ties inside a front
broken by greedy hypervolume selection (each next the candidate that adds the most area to
those before it, up to a reference point just beyond the rung's worst value in each
objective), then by trial number. What the search is judged on is the hypervolume of its
front, so a rung's slots go where the front gains area. Crowding distance, used before,
ranks both ends of a front first: the slowest, most accurate candidates (ratio 0.8-0.95
to the uncompressed model, which can add almost no area) and the fastest, least accurate
ones (docs/search.md has the replay of one run). A promotion
is handed out as soon as a rung's quota allows it, so no worker waits for a rung to
fill; a candidate ranked out now can still be promoted later, when more results raise
the quota.

Pure bookkeeping, no Ray, no Optuna: the searcher feeds it results and asks it for
promotions; its state (results, promotions issued, failures) is rebuilt from the
Optuna storage on resume, so a promotion issued by a killed driver and never finished
is handed out again (and only that: nothing is promoted twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def nondominated(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Mask of the rows of ``values`` (n x k) no other row dominates: the first front alone, in one pass."""
    signed = np.where(np.asarray(maximize), -values, values).astype(float)  # minimise everything
    return np.array([not (np.all(signed <= row, axis=1) & np.any(signed < row, axis=1)).any() for row in signed],
                    dtype=bool)


def nondominated_fronts(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Front index (0 = non-dominated) of every row of ``values`` (n x k)."""
    front = np.full(len(values), -1)
    remaining = np.arange(len(values))
    level = 0
    while remaining.size:
        first = nondominated(values[remaining], maximize)
        front[remaining[first]] = level
        remaining = remaining[~first]
        level += 1
    return front


def hypervolume_2d(points: np.ndarray, ref: tuple[float, float]) -> float:
    """Hypervolume dominated by ``points`` (both objectives minimised) up to ``ref``."""
    pts = points[(points[:, 0] < ref[0]) & (points[:, 1] < ref[1])]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0])]
    area, best_f2 = 0.0, ref[1]
    for i, (f1, f2) in enumerate(pts):
        best_f2 = min(best_f2, f2)
        next_f1 = pts[i + 1, 0] if i + 1 < len(pts) else ref[0]
        area += (next_f1 - f1) * (ref[1] - best_f2)
    return area


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by ``points`` (n x k, every objective minimised) up to ``ref``; points not better than
    ``ref`` in every objective add nothing. Two objectives: one sweep; more: slices along the last objective."""
    points = np.asarray(points, dtype=float)
    points = points[np.all(points < ref, axis=1)]
    if not len(points):
        return 0.0
    if points.shape[1] == 2:
        return hypervolume_2d(points, tuple(ref))
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    points = points[np.argsort(points[:, -1], kind="stable")]
    volume = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        if upper > points[i, -1]:
            volume += (upper - points[i, -1]) * hypervolume(points[:i + 1, :-1], ref[:-1])
    return volume


def greedy_order(points: np.ndarray, ref: np.ndarray) -> list[int]:
    """Row indices of ``points`` (minimised), each next the one that adds the most hypervolume to the rows before
    it (greedy hypervolume subset selection; ties, within a millionth of the total, to the lower index). Two
    near-twins do not hide each other, as each one's exclusive contribution would: the first counts in full, the
    second adds nearly nothing."""
    chosen: list[int] = []
    left, volume = list(range(len(points))), 0.0
    scale = max(hypervolume(points, ref), 1e-300) * 1e-6
    while left:
        gains = [hypervolume(points[chosen + [i]], ref) - volume for i in left]
        best = max(range(len(left)), key=lambda j: (round(gains[j] / scale), -left[j]))
        volume += gains[best]
        chosen.append(left.pop(best))
    return chosen


def rank_order(numbers: Sequence[int], values: np.ndarray, maximize: Sequence[bool]) -> list[int]:
    """``numbers`` best first: by front, then in the order greedy hypervolume selection takes them within the
    front (:func:`greedy_order`), then number. The reference point lies a tenth of each objective's range beyond
    its worst value (one unit where all are equal), so the worst points still count."""
    if not len(numbers):
        return []
    values = np.asarray(values, dtype=float)
    fronts = nondominated_fronts(values, maximize)
    signed = np.where(np.asarray(maximize), -values, values)  # minimise everything
    span = signed.max(axis=0) - signed.min(axis=0)
    ref = signed.max(axis=0) + np.where(span > 0, span / 10, 1.0)
    out: list[int] = []
    for level in np.unique(fronts):
        members = sorted(np.flatnonzero(fronts == level), key=lambda i: numbers[i])  # ties: the lower number
        out += [numbers[members[j]] for j in greedy_order(signed[members], ref)]
    return out


@dataclass
class Ladder:
    """Results per rung and the promotions issued; ``steps[k]`` is rung k's cumulative step count."""

    steps: tuple[int, ...]
    reduction: float
    maximize: tuple[bool, ...]
    results: dict[int, dict[int, tuple[float, ...]]] = field(default_factory=dict)
    issued: set[tuple[int, int]] = field(default_factory=set)  # (trial number, rung promoted to)
    failed: set[tuple[int, int]] = field(default_factory=set)  # promotions whose evaluation raised
    held: set[int] = field(default_factory=set)  # ranked, never promoted (the uncompressed model: nothing to recover)
    #: the end of a search: the front's candidates below the top rung are promoted too, one rung at a time,
    #: before any quota promotion (:meth:`finishing_promotions`)
    finishing: bool = False
    #: False: the quotas promote nobody (the last part of a time budget, kept for the front alone)
    quotas: bool = True
    _ranking: dict[int, list[int]] = field(default_factory=dict, repr=False)  # rung -> its rank order, until it grows
    infeasible: set[tuple[int, int]] = field(default_factory=set)  # (number, rung) results over a budget
    _front: list[int] | None = field(default=None, repr=False)  # the front of highest-rung values, until a result

    @property
    def top(self) -> int:
        """Index of the highest rung."""
        return len(self.steps) - 1

    def record(self, number: int, rung: int, values: Sequence[float], feasible: bool = True) -> None:
        """A candidate's objective values at ``rung`` (rung 0: its first evaluation); ``feasible``: within every
        budget there (an accuracy budget may be met only at a higher rung)."""
        if rung > 0 and (number, rung) not in self.issued:
            raise ValueError(f"trial {number} has a result at rung {rung} but was never promoted there")
        self.results.setdefault(rung, {})[number] = tuple(float(v) for v in values)
        self._ranking.pop(rung, None)
        self._front = None
        (self.infeasible.discard if feasible else self.infeasible.add)((number, rung))

    def record_failure(self, number: int, rung: int) -> None:
        """The promotion of ``number`` to ``rung`` raised: it stays at its previous rung, not retried."""
        self.failed.add((number, rung))

    def quota(self, rung: int) -> int:
        """How many of ``rung``'s results may be promoted now."""
        return int(len(self.results.get(rung, {})) // self.reduction)

    def lost(self, in_flight: set[tuple[int, int]] = frozenset()) -> list[tuple[int, int]]:
        """Promotions issued (by this or an earlier driver) with neither result nor failure, not in flight."""
        done = {(n, k) for k, rows in self.results.items() for n in rows} | self.failed
        return sorted(p for p in self.issued - done - set(in_flight))

    def promotable(self) -> list[tuple[int, int]]:
        """New promotions due now, as (number, target rung): with :attr:`finishing`, the front's first
        (:meth:`finishing_promotions`); then what the quotas allow (unless :attr:`quotas` is off), highest rungs
        first."""
        out = self.finishing_promotions() if self.finishing else []
        if not self.quotas:
            return out
        for rung in range(self.top - 1, -1, -1):
            quota = self.quota(rung)
            if quota == 0:
                continue
            best = self._ranked(rung)[:quota]
            out += [(n, rung + 1) for n in best
                    if (n, rung + 1) not in self.issued and n not in self.held and (n, rung + 1) not in out]
        return out

    def front(self) -> list[int]:
        """The feasible candidates non-dominated on their highest rung's values (the front the search reports is
        drawn from these), in :func:`rank_order`; computed once per set of results."""
        if self._front is None:
            best: dict[int, tuple[float, ...]] = {}
            for rung in sorted(self.results):  # a higher rung's values replace a lower one's
                best.update(self.results[rung])
            numbers = [n for n in best if (n, self.reached(n)) not in self.infeasible]
            values = np.array([best[n] for n in numbers], dtype=float).reshape(len(numbers), len(self.maximize))
            members = np.flatnonzero(nondominated(values, self.maximize)) if numbers else []
            self._front = rank_order([numbers[i] for i in members], values[members], self.maximize)
        return list(self._front)

    def finishing_promotions(self) -> list[tuple[int, int]]:
        """One rung up for each front candidate below the top rung (not held, not issued there, not failed there):
        at the end of a search the front is what is kept, and a candidate left at a low rung is scored on fewer
        distillation steps than the rest."""
        return [(number, rungs[0]) for number, rungs in self._finishing_chains()
                if (number, rungs[0]) not in self.issued]

    def finishing_work(self) -> list[list[int]]:
        """Per front candidate below the top rung, the rungs it still has to run to reach the top (those in
        flight included, those after a failed promotion excluded): what :meth:`finishing_promotions` will cost."""
        return [rungs for _, rungs in self._finishing_chains()]

    def _finishing_chains(self) -> list[tuple[int, list[int]]]:
        """(number, the rungs above its highest) for each front candidate below the top rung, not held, whose next
        promotion has not failed (a failure can only be the next rung's: a rung needs the one below)."""
        out = []
        for number in self.front():
            rung = self.reached(number)
            if number in self.held or rung is None or rung >= self.top or (number, rung + 1) in self.failed:
                continue
            out.append((number, list(range(rung + 1, self.top + 1))))
        return out

    def _ranked(self, rung: int) -> list[int]:
        """:func:`rank_order` of ``rung``'s results, computed once per set of results (the driver asks each time it
        suggests; :meth:`record` drops it)."""
        if rung not in self._ranking:
            rows = self.results[rung]
            numbers = list(rows)
            self._ranking[rung] = rank_order(numbers, np.array([rows[n] for n in numbers]), self.maximize)
        return self._ranking[rung]

    def issue(self, number: int, rung: int) -> None:
        """Mark ``number`` promoted to ``rung``; a second promotion of the same pair is a bug."""
        if (number, rung) in self.issued:
            raise ValueError(f"trial {number} was already promoted to rung {rung}")
        if number not in self.results.get(rung - 1, {}):
            raise ValueError(f"trial {number} has no result at rung {rung - 1} to promote from")
        self.issued.add((number, rung))

    def reached(self, number: int) -> int | None:
        """The highest rung with a result for ``number`` (None: not scored yet)."""
        rungs = [k for k, rows in self.results.items() if number in rows]
        return max(rungs) if rungs else None

    def counts(self) -> list[int]:
        """How many candidates reached each rung (a result there)."""
        return [len(self.results.get(k, {})) for k in range(len(self.steps))]
