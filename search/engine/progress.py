"""A run's progress while it searches: the log line per trial, the progress bar (plain lines off a terminal), the tables.

Contract: :meth:`Progress.on_settle` (after every tell) and :meth:`Progress.on_rung`
(after every promotion result) log one line and move the bar; the tables
(``trials.parquet``/``.csv``) and the bar's front figures are rewritten from the storage
at most every :data:`TABLES_EVERY_S` seconds, and always once the target is reached.
:meth:`Progress.refresh` rewrites them now and returns the trials frame.

The Optuna storage is the record (committed at each tell); the tables are views of it,
rewritten in full, so refreshing them on every tell would cost the driver - which shares
the CPU with the workers - more than the tell itself.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

from vitsearch.search.engine.plan import eta_text
from vitsearch.search.results.basis import rebase, study_basis
from vitsearch.search.results.tables import fastest_text, pareto_front, run_counts, write_tables

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from vitsearch.search.engine.plan import RunPlan

log = logging.getLogger("vitsearch.run")

#: seconds between rewrites of trials.parquet/csv and the progress bar's front figures
TABLES_EVERY_S = 2.0
#: seconds between two progress lines where stderr is not a terminal (a log file, a pipe)
LINES_EVERY_S = 30.0


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (False where it is closed or has no file behind it)."""
    try:
        return bool(sys.stderr and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class LineBar:
    """The progress bar's interface for a stderr that is not a terminal.

    A bar redraws itself with carriage returns, which pile up on one line of a log file
    (dozens per second while the run-start screen settles candidates); this writes one
    plain line, with the seconds since the start, at most every ``every`` seconds as the
    run moves, and the last state when closed (a state already written is not repeated).
    """

    def __init__(self, desc: str, total: int, initial: int = 0, every: float = LINES_EVERY_S, stream=None):
        self.desc, self.total, self.n, self.every, self.stream = desc, total, initial, every, stream
        self.postfix, self._at, self._said, self._t0 = "", None, None, time.monotonic()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._at is not None and now - self._at < self.every:
            return
        state = f"{self.n}/{self.total} evaluated" + (f", {self.postfix}" if self.postfix else "")
        stream = self.stream or sys.stderr
        if state != self._said and stream is not None:
            print(f"{self.desc} at {now - self._t0:.0f} s: {state}", file=stream, flush=True)
        self._at, self._said = now, state

    def close(self) -> None:
        self.refresh(force=True)


class Progress:
    """The progress of one run of ``plan``; :meth:`start` it on the study before the first tell."""

    def __init__(self, plan: RunPlan, objectives: list[tuple[str, str]]):
        self.plan = plan
        self.spec = plan.spec
        self.objectives = objectives
        self.study: optuna.Study | None = None
        self.bar = None

    def start(self, study: optuna.Study, done: int) -> None:
        """Open the bar at ``done`` evaluated candidates (what earlier attempts and other drivers did)."""
        from tqdm.auto import tqdm

        self.study = study
        self._t0, self._done0, self._done, self._tables_at = time.time(), done, done, 0.0
        desc = f"study {self.spec.name}"
        self.bar = (tqdm(total=self.plan.trials, initial=done, desc=desc, unit="trial", dynamic_ncols=True)
                    if stderr_is_terminal() else LineBar(desc, self.plan.trials, done))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def on_settle(self, trial: optuna.trial.FrozenTrial) -> None:
        """After every tell: a log line and the count; tables and front at most every TABLES_EVERY_S."""
        log.info("trial %d %s%s", trial.number, trial.state.name,
                 "" if trial.state.name == "COMPLETE" else
                 f": {trial.user_attrs.get('error') or trial.user_attrs.get('infeasible_reason')}")
        self._done += trial.state.name == "COMPLETE" and trial.user_attrs.get("reused_from") is None
        self._throttled_refresh()

    def on_rung(self, number: int, rung: int) -> None:
        """After every promotion result (or failure)."""
        log.info("trial %d reached rung %d (%d steps)", number, rung, self.spec.recovery.ladder[rung])
        self._throttled_refresh()

    def _throttled_refresh(self) -> None:
        if self.bar is not None:
            self.bar.n = self._done
        if time.monotonic() - self._tables_at < TABLES_EVERY_S and self._done < self.plan.trials:
            if self.bar is not None:
                self.bar.refresh()
            return
        self.refresh()

    def refresh(self) -> pd.DataFrame:
        """Rewrite the tables from the storage, put their figures on the progress bar; the trials frame."""
        self._tables_at = time.monotonic()
        frame = write_tables(self.study, self.plan.run_dir.path)
        counts = run_counts(frame, len(self.spec.recovery.ladder))
        self._done = counts["evaluated"]
        # ms on the report's basis, as the table printed at the end states them
        front = rebase(pareto_front(frame, self.objectives), study_basis(self.study))  # counted, not listed
        best = front["accuracy"].max() if not front.empty else float("nan")
        if self.bar is not None:
            self.bar.n = self._done
            rungs = "/".join(map(str, counts["reached_rung"]))
            settled = sum(counts[k] for k in ("settled_on_predicted_cost", "settled_on_measured_cost",
                                               "settled_screened"))
            self.bar.set_postfix_str(
                f"rungs {rungs}, settled {settled}, "
                f"failed {counts['failed']}, infeasible {counts['infeasible']}, reused {counts['reused']}, "
                f"front {len(front)}, best feasible val acc {'n/a' if best != best else f'{best:.2%}'}, "
                f"{fastest_text(front)}, "
                f"ETA {eta_text(self._done, self.plan.trials, self._t0, self._done0)}")
            self.bar.refresh()
        return frame
