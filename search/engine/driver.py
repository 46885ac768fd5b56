"""The driver of one run: a validated plan, searched with Optuna and Ray Tune, to its summary.

Contract: :func:`run_study` validates the study and options (:mod:`.plan`; nothing is
written on bad input), locks the run dir (one driver per run dir) and runs a
:class:`Driver` until the study holds the requested number of evaluated candidates, the
time budget is spent, or a signal stops it. It returns the summary (also in
``summary.json``) or raises a :class:`~vitsearch.spaces.errors.VitsearchError`:
:class:`SearchFailed` when candidates keep failing in a row. SIGINT and SIGTERM stop the
run cleanly: this driver's trials in flight are failed and asked again on ``--resume``,
the tables are rewritten, and the summary names the signal (``interrupted_by``).

The jobs around the search loop live beside it: :mod:`.startup` (inputs, Ray, logs, the
study), :mod:`.progress` (log lines, progress bar, tables while it runs), :mod:`.summary`
(the summary and the earlier attempts' books).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from vitsearch.search.engine.accounting import cpu_books, descendants_cpu, engine_books
from vitsearch.search.engine.ownership import Ownership
from vitsearch.search.engine.plan import RunOptions, RunPlan, make_sampler, plan_run
from vitsearch.search.engine.progress import Progress
from vitsearch.search.engine.repeats import REPEATS, measure_repeats
from vitsearch.search.engine.resources import trial_resources
from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.engine.searcher import CandidateSearch
from vitsearch.search.engine.sharing import drain_surplus
from vitsearch.search.engine.startup import RunInputs, init_ray, latency_source, load_inputs, open_study, start_logging
from vitsearch.search.engine.stopsignals import StopSignals
from vitsearch.search.engine.summary import earlier_attempts, write_summary
from vitsearch.search.engine.worker import evaluate_batch
from vitsearch.search.results.testacc import RUNG_DIR
from vitsearch.search.storage import storable_url
from vitsearch.spaces.errors import VitsearchError

__all__ = ["Driver", "RunOptions", "SearchFailed", "earlier_attempts", "run_study"]

log = logging.getLogger("vitsearch.run")


class SearchFailed(VitsearchError):
    """Every candidate fails: the study stops instead of burning trials."""

    exit_code = 1


def _short_name(trial) -> str:
    numbers = [c["number"] for c in trial.config.get("candidates", [])]
    return f"batch_{trial.trial_id}_{numbers[0]}-{numbers[-1]}" if numbers else f"batch_{trial.trial_id}"


class Driver:
    """Runs a validated :class:`RunPlan` to completion (or until interrupted)."""

    def __init__(self, plan: RunPlan):
        self.plan = plan
        self.spec = plan.spec
        self.objectives = [(o.metric, o.direction) for o in self.spec.objectives]
        self.progress = Progress(plan, self.objectives)

    def run(self) -> dict:
        """Run the search; SIGINT and SIGTERM stop it cleanly (``interrupted_by`` in the summary)."""
        self.signals = StopSignals()
        self.signals.install()
        try:
            summary = self._run()
        finally:
            self.signals.restore()
        summary["interrupted_by"] = self.signals.received
        return summary

    def _run(self) -> dict:
        inputs = load_inputs(self.plan, self.objectives)  # model/data errors before anything is written
        self.latency_source = latency_source(inputs)
        print(f"vitsearch run: {inputs.space.size():,} configs in the space; latency {self.latency_source}",
              file=sys.stderr)
        init_ray(self.plan)
        self.signals.install()  # after Ray's head node took SIGTERM
        if not self.plan.resume:
            self._create_run_dir(inputs)
        start_logging(self.plan)
        searcher, ownership = self._searcher(inputs)
        books, seconds, frame = self._fit(self._tuner(inputs, searcher), searcher, ownership)
        if searcher.exhausted():
            log.info("stopped: %d asks in a row were settled on cost or reused", searcher.idle_asks)
        # a stopped run ends now (a scheduler's grace period is short); its resume times them
        sitting = None if self.signals.received is not None else self._sitting(inputs)
        return write_summary(self.plan, frame, completed=searcher.completed(), seconds=seconds, books=books,
                             session=inputs.session, reference=searcher.reference, sitting=sitting,
                             latency_source=self.latency_source,
                             stopped_at_time_budget=searcher.stopped_at_deadline, study=searcher.study)

    def _create_run_dir(self, inputs: RunInputs) -> None:
        plan = self.plan
        plan.run_dir.create(self.spec, {
            "trials": plan.trials, "storage": storable_url(plan.storage_url), "study_name": self.spec.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "base_accuracy": inputs.base_accuracy, "base_precision": inputs.session.base_precision,
            "space_size": inputs.space.size(),
        })

    def _searcher(self, inputs: RunInputs) -> tuple[CandidateSearch, Ownership]:
        """The study opened, the searcher on it, the progress bar started at what the study holds."""
        plan, rc = self.plan, self.spec.recovery
        storage, ownership, seed_offset, reference = open_study(plan, self.objectives, inputs.space, inputs.reference)
        ladder = Ladder(rc.ladder, rc.reduction, tuple(d == "maximize" for _, d in self.objectives))
        searcher = CandidateSearch(space=inputs.space, objectives=self.objectives, feasibility=inputs.feasibility,
                                   target=plan.trials, batch_size=plan.batch_size, workers=plan.workers,
                                   sampler=make_sampler(self.spec, self._sampler_trials(), seed_offset),
                                   storage=storage, study_name=self.spec.name,
                                   on_settle=self.progress.on_settle, ladder=ladder,
                                   rung_dir=str((plan.run_dir.path / RUNG_DIR).resolve()), reference=reference,
                                   on_rung=self.progress.on_rung, ownership=ownership, finish_front=rc.finish_front,
                                   seed=(self.spec.search.seed + seed_offset) % 2**32)
        self.study = ownership.study = searcher.study
        self.progress.start(self.study, searcher.completed())
        return searcher, ownership

    def _tuner(self, inputs: RunInputs, searcher: CandidateSearch):
        """Tune's Tuner: batches of candidates from ``searcher``, evaluated by :func:`evaluate_batch` workers."""
        import ray
        from ray import tune

        plan, feas = self.plan, inputs.feasibility
        cpus_per = max(1, plan.cpus // plan.workers) if not plan.address else 1
        trainable = tune.with_resources(
            tune.with_parameters(evaluate_batch, session_holder=[ray.put(inputs.session.for_search())],
                                 feasibility=feas, predictor=feas.predictor, threads=cpus_per,
                                 # off only for the engine benchmark's A/B (benchmarks/engine.py)
                                 pipeline=os.environ.get("VITSEARCH_ENGINE_PIPELINE", "1") != "0",
                                 reference=inputs.reference),
            trial_resources(str(inputs.session.device), cpus_per, plan.workers, ray.cluster_resources().get("GPU", 0),
                            local=not plan.address))
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=plan.workers,
                                        reuse_actors=True, trial_name_creator=_short_name,
                                        trial_dirname_creator=_short_name),
            run_config=tune.RunConfig(
                name=f"attempt-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}",
                storage_path=str((plan.run_dir.path / "tune").resolve()), verbose=2 if plan.verbose else 0,
                failure_config=tune.FailureConfig(max_failures=2)))

    def _fit(self, tuner, searcher: CandidateSearch, ownership: Ownership):
        """Fit ``tuner``; the engine's books, the fit's seconds and the trials frame (the tables rewritten).

        However the fit ends, the heartbeats stop, the tables are rewritten and the bar
        closed; after a stop signal this driver's trials in flight are asked again first.
        """
        plan = self.plan
        local = not plan.address  # Ray's system processes are this driver's children only when it started them
        ray_cpu0, driver_cpu0 = descendants_cpu() if local else None, time.process_time()
        started = time.time()
        ownership.start()
        budget = self.spec.search.time_budget_minutes
        if budget is not None:  # counted from here: Ray up, model loaded, workers not started yet
            searcher.clock.started, searcher.clock.deadline = started, started + 60.0 * budget
        try:
            with self.signals.fitting():
                tuner.fit()
            ended = time.time()
            drain_surplus(self.study, plan.trials)
        finally:
            if self.signals.received is not None:
                self._requeue_in_flight(ownership)
            ownership.close()
            frame = self.progress.refresh()  # tables and progress as the storage has them, however fit ended
            self.progress.close()
        driver_cpu, ray_cpu1 = time.process_time() - driver_cpu0, descendants_cpu() if local else None
        if searcher.gave_up():
            raise SearchFailed(
                f"stopped after {searcher.failures_in_a_row} failed trials in a row; last error: "
                f"{searcher.last_error}; see {plan.run_dir.log_file} and trials.csv")
        books = engine_books(searcher.timings, started, ended, plan.workers)
        books.update(cpu_books(searcher.timings, driver_cpu, len(searcher.told), ray_cpu0, ray_cpu1))
        return books, ended - started, frame

    def _requeue_in_flight(self, ownership: Ownership) -> None:
        """After a stop signal: this driver's trials still RUNNING are failed and enqueued again (same parameters)."""
        mine = ownership.requeue_mine()
        if mine:
            log.info("stopped by a signal: trials %s were in flight: failed, asked again on --resume", mine)

    def _sitting(self, inputs: RunInputs) -> dict | None:
        """The run's own sitting-to-sitting spread, when its latencies were measured with none known.

        A profile's spread already widens every measured interval; predicted latencies are
        re-measured by the report and pick. Otherwise the earliest measured candidates are
        timed again now (:mod:`vitsearch.search.engine.repeats`).
        """
        session = inputs.session
        if inputs.feasibility.predictor is not None or session.latency_kwargs().get("sitting_sd") is not None:
            return None
        print(f"vitsearch run: timing up to {REPEATS} early candidates again (how far a latency ratio moves "
              "between sittings; every interval reported includes it)", file=sys.stderr)
        return measure_repeats(self.study, session, self.spec.latency.interleave.confidence)

    def _sampler_trials(self) -> int:
        """What the sampler is sized for: the run's target, or under a time budget the study's ``search.trials``.

        A time-budgeted run may be given a huge ``--trials`` so that time alone stops it;
        TPE's random start-up (a fifth) and NSGA-II's population must not scale with that.
        """
        s = self.spec.search
        return self.plan.trials if s.time_budget_minutes is None else min(self.plan.trials, s.trials)


def run_study(study: str | Path, opts: RunOptions) -> dict:
    """Run (or resume) a study to the requested number of completed trials; returns a summary."""
    return run_planned(plan_run(study, opts))


def run_planned(plan: RunPlan) -> dict:
    """Run a validated :class:`RunPlan` (:func:`~vitsearch.search.engine.plan.plan_run`); returns a summary."""
    with plan.run_dir.locked(new=not plan.resume):  # one driver per run dir
        return Driver(plan).run()
