"""``vitsearch pick``: the most accurate variant within a latency budget (or the fastest within an accuracy drop).

"Most accurate" by val top-1 among the Pareto front, or (``--choose-by teacher``, the
default) by how closely the variant follows its teacher on val (:mod:`.closeness`) among
the front and the top rung's other trials
(:func:`~vitsearch.search.results.runview.top_rung_pool`).

The budget is checked against latencies re-measured on this machine when its device
fingerprint is the study's, else against the recorded (measured or predicted) ones,
and the output says which. :mod:`.export` rebuilds, polishes, re-times and writes the
winner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from vitsearch.spaces.errors import ConfigError, NothingWithinBudget


@dataclass
class Choice:
    """The winner, the runner-up (or None), a sentence on why, and what was asked."""

    winner: pd.Series
    runner_up: pd.Series | None
    why: str
    asked: dict[str, Any] = field(default_factory=dict)
    pool: str = "Pareto"  # what the rows ranked were, as their variants are named


def check_budget(latency_ms: float | None, min_accuracy: float | None, max_size_mb: float | None,
                 max_drop: float | None = None) -> None:
    """ConfigError (exit 2) for a budget that cannot mean anything, or for no budget at all."""
    if latency_ms is None and max_drop is None:
        raise ConfigError("pick: give --latency-ms X (the most accurate variant within X ms) or --max-drop P "
                          "(the fastest within P val points of the uncompressed model), or both")
    if latency_ms is not None and not 0 < latency_ms < float("inf"):
        raise ConfigError(f"--latency-ms: must be > 0, got {latency_ms:g}; give a finite budget in ms, e.g. 2.0")
    if max_drop is not None and not 0 <= max_drop <= 100:
        raise ConfigError(f"--max-drop: must be accuracy points in [0, 100] (1 = one point), got {max_drop:g}")
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError(f"--min-accuracy: must be a fraction in [0, 1] (e.g. 0.95), got {min_accuracy:g}")
    if max_size_mb is not None and not 0 < max_size_mb < float("inf"):
        raise ConfigError(f"--max-size-mb: must be > 0, got {max_size_mb:g}; give a finite size in MB")


def check_drop_base(max_drop: float | None, base_accuracy: float | None) -> None:
    """ConfigError (exit 2) for a ``max_drop`` with no uncompressed val accuracy to measure it from.

    ``vitsearch pick`` measures that accuracy itself when the run recorded none; an API caller passes it.
    """
    if max_drop is not None and (base_accuracy is None or base_accuracy != base_accuracy):
        raise ConfigError(f"--max-drop: no val accuracy of the uncompressed model to measure the drop from (got "
                          f"{base_accuracy}); pass the uncompressed model's val top-1 as a fraction")


def check_same_base(view, session) -> None:
    """ConfigError (exit 2) where this machine would deploy the uncompressed model in another precision than the run.

    ``model.precision: auto`` resolves per device (bf16 on CUDA, fp32 on CPU): an accuracy
    measured here would then not be the one the run's candidates were compared against.
    """
    ran = view.meta.get("base_precision")
    if ran is not None and ran != session.base_precision:
        raise ConfigError(f"--max-drop: the run deployed the uncompressed model in {ran}, this machine would in "
                          f"{session.base_precision} ({session.device.type}); pick where the run ran, or use "
                          "--min-accuracy with a fraction")


def within_probability(confidence: float | None) -> str:
    """What "the interval's high end is within the budget" means as a probability."""
    if confidence is None or confidence != confidence:
        return "no interval recorded: judged on the point estimate"
    return f"within budget with >= {100 * (1 - (1 - confidence) / 2):.1f} % probability"


def choose(front: pd.DataFrame, latency_ms: float | None = None, min_accuracy: float | None = None,
           max_size_mb: float | None = None, max_drop: float | None = None,
           base_accuracy: float | None = None,
           closeness: Callable[[pd.DataFrame], pd.Series] | None = None, pool: str = "Pareto") -> Choice:
    """The row of ``front`` that answers the ask: the most accurate within ``latency_ms``, or the fastest within
    ``max_drop``.

    A variant is within the latency budget when the high end of its latency interval is
    (``budget_high_ms``; the point estimate where no interval was recorded), so it is
    within with >= 95 % probability for a two-sided 90 % interval. ``max_drop`` (points)
    keeps the variants whose val accuracy is at most that far below ``base_accuracy`` (the
    uncompressed model's, on the same val images: val selects, test reports). With a
    latency budget the most accurate wins (ties: the faster); with ``max_drop`` alone the
    fastest (ties: the more accurate). ``min_accuracy`` and ``max_size_mb`` only filter.
    ``closeness`` (with a latency budget): called with the rows within what was asked, it
    returns each one's val KL divergence from the teacher (:func:`.closeness.teacher_kl`),
    and the closest wins instead of the most accurate on val top-1 (ties: the faster).
    ``pool``: what ``front`` holds, as its rows are named ("Pareto", or "top-rung or Pareto" for
    :func:`~vitsearch.search.results.runview.top_rung_pool`).
    """
    check_budget(latency_ms, min_accuracy, max_size_mb, max_drop)
    asked = {k: v for k, v in (("latency_ms", latency_ms), ("max_drop_points", max_drop),
                               ("min_accuracy", min_accuracy), ("max_size_mb", max_size_mb)) if v is not None}
    if front.empty:
        raise NothingWithinBudget("no Pareto variant at all: the run has no feasible completed trial; "
                                  "relax the study's constraints or run more trials")
    check_drop_base(max_drop, base_accuracy)
    if "budget_high_ms" not in front:
        front = front.assign(budget_high_ms=front["budget_ms"], budget_confidence=float("nan"))
    floor = None if max_drop is None else base_accuracy - max_drop / 100
    ok = front if latency_ms is None else front[front["budget_high_ms"] <= latency_ms]
    if floor is not None:
        ok = ok[ok["accuracy"] >= floor - 1e-9]
    if min_accuracy is not None:
        ok = ok[ok["accuracy"] >= min_accuracy]
    if max_size_mb is not None:
        ok = ok[ok["size_mb"] <= max_size_mb]
    if latency_ms is None:
        ok = ok[ok["budget_ms"].notna()]  # the fastest needs a latency to be the fastest
    drop_text = "" if max_drop is None else (f"within {max_drop:g} val point{'' if max_drop == 1 else 's'} of the "
                                             f"uncompressed model ({base_accuracy:.2%} val)")
    if ok.empty:
        raise NothingWithinBudget(_nothing_within(front, latency_ms, min_accuracy, max_size_mb, drop_text, pool))
    within = _asked_text(latency_ms, min_accuracy, max_size_mb, drop_text)
    if latency_ms is None:
        ranked = ok.sort_values(["budget_ms", "accuracy"], ascending=[True, False])
        win = ranked.iloc[0]
        why = (f"trial {int(win['number'])} wins: the fastest of {len(ok)} {pool} variant(s) {within}, at "
               f"{_latency_text(win)}, {win['accuracy']:.2%} val")
    else:
        if closeness is None:
            ranked = ok.sort_values(["accuracy", "budget_ms"], ascending=[False, True])
            best = f"the most accurate ({ranked.iloc[0]['accuracy']:.2%})"
        else:
            kl = closeness(ok)
            if sorted(kl.index) != sorted(ok.index):
                raise ValueError(f"closeness: its values are for rows {sorted(kl.index)}, not the rows within what "
                                 f"was asked {sorted(ok.index)}")
            ranked = ok.assign(val_kl=kl).sort_values(["val_kl", "budget_ms"])
            best = (f"the closest to the teacher on val (KL {ranked.iloc[0]['val_kl']:.4f}; "
                    f"{ranked.iloc[0]['accuracy']:.2%} val top-1)")
        win = ranked.iloc[0]
        why = (f"trial {int(win['number'])} wins: {best} of {len(ok)} {pool} "
               f"variant(s) {within}, at {_latency_text(win)}: {within_probability(win.get('budget_confidence'))}")
    why += f"; {win['size_mb']:.3f} MB: {win['summary']}"
    over = len(front) - len(ok)
    if over:
        why += (f"; {over} more accurate or slower {pool} variant(s) are not within the budget with high probability"
                if list(asked) == ["latency_ms"] else f"; {over} more {pool} variant(s) are not within what was asked")
    runner = ranked.iloc[1] if len(ranked) > 1 else None
    if latency_ms is not None:  # what ranked the variants within the budget, and among which
        asked.update(choose_by="top1" if closeness is None else "teacher", ranked_among=pool)
    return Choice(win, runner, why, asked, pool)


def _asked_text(latency_ms: float | None, min_accuracy: float | None, max_size_mb: float | None, drop_text: str,
                latency_word: str = "") -> str:
    """``"within 2 ms and accuracy >= 95.00%"``: every condition asked, in one phrase."""
    parts = ([f"within {latency_ms:g} ms{latency_word}"] if latency_ms is not None else []) + (
        [drop_text] if drop_text else []) + ([f"accuracy >= {min_accuracy:.2%}"] if min_accuracy is not None else []) + (
        [f"size <= {max_size_mb:g} MB"] if max_size_mb is not None else [])
    return " and ".join(parts)


def _nothing_within(front: pd.DataFrame, latency_ms: float | None, min_accuracy: float | None,
                    max_size_mb: float | None, drop_text: str, pool: str = "Pareto") -> str:
    """One line: what was asked and the variant of ``front`` nearest to it (fastest, or most accurate)."""
    asked = _asked_text(latency_ms, min_accuracy, max_size_mb, drop_text, " with high probability")
    if latency_ms is not None:
        near = front.sort_values("budget_ms").iloc[0]
        name = "the fastest"
    else:
        near = front.sort_values(["accuracy", "budget_ms"], ascending=[False, True]).iloc[0]
        name = "the most accurate"
    return (f"no {pool} variant {asked}; {name} is trial {int(near['number'])} at {_latency_text(near)}, "
            f"val accuracy {near['accuracy']:.2%}, size {near['size_mb']:.3f} MB")


def _latency_text(row: pd.Series) -> str:
    """``"1.234 ms (high end 1.301 ms of its 95 % interval, measured, re-measured here)"``."""
    conf = row.get("budget_confidence")
    if conf is None or conf != conf:
        return f"{row['budget_ms']:.3f} ms ({row['budget_source']}, no interval)"
    return (f"{row['budget_ms']:.3f} ms (high end {row['budget_high_ms']:.3f} ms of its {round(100 * conf)} % "
            f"interval, {row['budget_source']})")


def runner_up_line(choice: Choice) -> str:
    """One sentence on the runner-up and how it compares."""
    r, w = choice.runner_up, choice.winner
    if r is None:
        return f"runner-up: none (the winner is the only {choice.pool} variant within what was asked)"
    kl = f", KL {r['val_kl'] - w['val_kl']:+.4f}" if "val_kl" in r else ""
    return (f"runner-up: trial {int(r['number'])}, {r['accuracy']:.2%} val at {_latency_text(r)}, "
            f"{r['size_mb']:.3f} MB ({(r['accuracy'] - w['accuracy']) * 100:+.1f} val points, unpaired{kl}, "
            f"{r['budget_ms'] - w['budget_ms']:+.3f} ms latency vs the winner): {r['summary']}")


