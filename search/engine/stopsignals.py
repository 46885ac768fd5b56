"""SIGINT (Ctrl-C) and SIGTERM (a scheduler, systemd, a container runtime) stop a run the same way.

During the search, the first signal asks Ray Tune to stop (its documented stop signal,
SIGUSR1): no new trials start, the trials in flight are failed and enqueued again (a
resume asks them first), the tables and the summary are written and the CLI prints the
resume command; it exits 128 + the signal's number (130, 143). A second signal, or one
outside the search, stops at once (:class:`Interrupted`, a ``KeyboardInterrupt``); the
Optuna storage already holds every finished trial, and ``--resume`` asks again what was
left running.

Ray's head node installs its own SIGTERM handler (kill every Ray process, exit 1) and
Tune its own SIGINT handler; :meth:`StopSignals.install` replaces both after Ray starts.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager

log = logging.getLogger("vitsearch.run")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Ray Tune's switch for its own SIGINT handler (this module's handler forwards to Tune instead)
TUNE_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; a process exits with ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Handlers for SIGINT and SIGTERM while a driver runs (set from the main thread only; elsewhere a no-op).

    ``received``: the first stop signal (None while there was none).
    """

    def __init__(self):
        self.received: int | None = None
        self._fitting = False
        self._previous: dict = {}  # signal -> handler, TUNE_ENV -> its value

    def install(self) -> None:
        """Take SIGINT and SIGTERM (again: ``ray.init`` replaces the SIGTERM handler); Tune leaves SIGINT alone."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (and receives signals)
        self._previous.setdefault(TUNE_ENV, os.environ.get(TUNE_ENV))
        os.environ[TUNE_ENV] = "1"
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        """The handlers (and Tune's setting) from before the first :meth:`install`."""
        for key, previous in self._previous.items():
            if key != TUNE_ENV:
                signal.signal(key, previous)
            elif previous is None:
                os.environ.pop(TUNE_ENV, None)
            else:
                os.environ[TUNE_ENV] = previous
        self._previous.clear()

    @contextmanager
    def fitting(self):
        """While Tune runs the search: the first signal stops it gracefully."""
        self._fitting = True
        try:
            yield
        finally:
            self._fitting = False

    def _handle(self, signum: int, frame) -> None:
        first = self.received is None
        if first:
            self.received = signum
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if first and self._fitting and callable(tune_stop):
            note = (f"{signal.Signals(signum).name} received: stopping the search (what finished is recorded, "
                    "trials in flight are asked again on --resume; send it again to stop at once)")
            log.warning(note)
            print(f"\nvitsearch run: {note}", file=sys.stderr, flush=True)
            tune_stop(signum, frame)
            return
        raise Interrupted(signum)
