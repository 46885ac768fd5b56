"""The driver of one run: Ray, the Optuna study, Tune's Tuner, progress and tables."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from datetime import datetime, timezone

from vitsearch.search.engine.accounting import cpu_books, descendants_cpu, engine_books
from vitsearch.search.engine.sharing import drain_surplus
from vitsearch.search.engine.stopsignals import StopSignals
from vitsearch.search.engine.plan import RunOptions, RunPlan, eta_text, make_sampler, plan_run
from vitsearch.search.engine.resources import trial_resources
from vitsearch.search.engine.repeats import REPEATS, measure_repeats
from vitsearch.search.results.rundir import write_atomic
from vitsearch.search.results.sitting import run_sitting_sd, widen_frame
from vitsearch.search.storage import open_storage, storable_url
from vitsearch.search.session import study_predictor
from vitsearch.spaces.errors import ConfigError, VitsearchError
from vitsearch.search.results.tables import fastest_text, front_table, pareto_front, run_counts, write_tables

log = logging.getLogger("vitsearch.run")

#: seconds between rewrites of trials.parquet/csv and the progress bar's front figures
TABLES_EVERY_S = 2.0


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
        self.bar = None

    # ---- setup -------------------------------------------------------------------------
    def _load(self):
        from vitsearch.evaluators import evaluate_accuracy
        from vitsearch.search.engine.feasibility import Feasibility
        from vitsearch.search.runtime_eval import runtime_search_space
        from vitsearch.search.session import load_session

        session = load_session(self.spec)
        space, notes = runtime_search_space(self.spec, session.base, session.device)
        for note in notes:  # printed at the start of the run: what the runtime cannot realise
            log.warning(note)
            print(f"note: {note}")
        c = self.spec.constraints
        meta = self.plan.run_dir.meta() if self.plan.resume else {}
        base_acc = meta.get("base_accuracy")
        if base_acc is None and c.max_accuracy_drop is not None:
            base_acc = evaluate_accuracy(session.base, session.data.val, session.device,
                                         self.spec.data.eval_batch_size).top1
        predictor = study_predictor(session)
        from vitsearch.search.engine.gain import reference_of

        self.reference = reference_of(session, self.objectives, predictor)  # the no-gain line, before any worker
        feas = Feasibility(c.max_latency_ms, c.max_size_mb,
                           None if c.max_accuracy_drop is None else base_acc - c.max_accuracy_drop,
                           predictor=predictor, predictor_fingerprint=getattr(predictor, "fingerprint_id", None))
        return session, space, feas, base_acc


    def _start_logging(self) -> None:
        import ray  # noqa: F401  (installs Ray's own stderr handler, which we replace below)

        handler = logging.FileHandler(self.plan.run_dir.log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in ("vitsearch", "ray", "optuna"):
            lg = logging.getLogger(name)
            if not self.plan.verbose:  # Ray's console output goes to run.log unless --verbose
                for h in [h for h in lg.handlers if isinstance(h, logging.StreamHandler)
                          and not isinstance(h, logging.FileHandler)]:
                    lg.removeHandler(h)
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
            lg.propagate = self.plan.verbose and name != "vitsearch"
        import optuna

        optuna.logging.disable_default_handler()

    def _init_ray(self) -> None:
        import ray

        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial CSV/JSON/TBX files
        os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # Ray starts workers at nice 15 (their main thread; grpc threads stay at 0): every
        # latency timed in a worker would yield to any other process. Local clusters start
        # them at 0; on `ray start` clusters set RAY_worker_niceness=0 there (each
        # measurement records the timing thread's nice value either way).
        os.environ.setdefault("RAY_worker_niceness", "0")
        if ray.is_initialized():
            return
        kwargs = dict(include_dashboard=False, log_to_driver=self.plan.verbose,
                      logging_level=logging.INFO if self.plan.verbose else logging.ERROR)
        if self.plan.address:
            try:
                ray.init(address=self.plan.address, **kwargs)
            except Exception as exc:
                detail = str(exc).strip().splitlines()[-1][:240] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"--address: could not join the Ray cluster at {self.plan.address!r} ({detail}); "
                                  "with token authentication set RAY_AUTH_MODE=token and share the cluster's token "
                                  "(ray get-auth-token)") from None
        else:
            from vitsearch.search.engine.raylocal import init_local, reap

            # "local": always a fresh local instance, never a cluster that `ray start` left on this machine;
            # on 127.0.0.1; its session is noted in the run dir's lock, and what a killed driver left is reaped
            reap(self.plan.run_dir.previous_ray_session())
            self.plan.run_dir.note_ray_session(init_local(self.plan.cpus, **kwargs))

    # ---- run ---------------------------------------------------------------------------
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
        import optuna
        import ray
        from ray import tune

        from vitsearch.search.engine.searcher import CandidateSearch
        from vitsearch.search.engine.worker import evaluate_batch

        session, space, feas, base_acc = self._load()  # model/data errors before anything is written
        cal = (feas.predictor.state.get("calibration") or {}) if feas.predictor else {}
        self.latency_source = ("predicted by the latency predictor fitted on this device (fingerprint "
                               f"{feas.predictor_fingerprint}"
                               + (f", calibrated x{cal['factor']:.3f}: {cal['how']}" if cal else "")
                               + "); the report and pick re-measure" if feas.predictor
                               else f"measured on {session.device} for every candidate (no fitted profile)")
        print(f"vitsearch run: {space.size():,} configs in the space; latency {self.latency_source}", file=sys.stderr)
        self._init_ray()
        self.signals.install()  # after Ray's head node took SIGTERM
        plan = self.plan
        if not plan.resume:
            plan.run_dir.create(self.spec, {
                "trials": plan.trials, "storage": storable_url(plan.storage_url), "study_name": self.spec.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "base_accuracy": base_acc, "space_size": space.size(),
            })
        self._start_logging()
        storage, ownership, seed_offset = self._open_study(space)
        from vitsearch.search.engine.rungs import Ladder
        from vitsearch.search.results.testacc import RUNG_DIR

        rc = self.spec.recovery
        self.ladder = Ladder(rc.ladder, rc.reduction, tuple(d == "maximize" for _, d in self.objectives))
        searcher = CandidateSearch(space=space, objectives=self.objectives, feasibility=feas, target=plan.trials,
                                   batch_size=plan.batch_size, workers=plan.workers,
                                   sampler=make_sampler(self.spec, self._sampler_trials(), seed_offset),
                                   storage=storage,
                                   study_name=self.spec.name, on_settle=self._on_settle, ladder=self.ladder,
                                   rung_dir=str((plan.run_dir.path / RUNG_DIR).resolve()), reference=self.reference,
                                   on_rung=self._on_rung, ownership=ownership)
        self.study = ownership.study = searcher.study
        self._progress_start(searcher.completed())
        cpus_per = max(1, plan.cpus // plan.workers) if not plan.address else 1
        trainable = tune.with_resources(
            tune.with_parameters(evaluate_batch, session_holder=[ray.put(session.for_search())], feasibility=feas,
                                 predictor=feas.predictor, threads=cpus_per,
                                 # off only for the engine benchmark's A/B (benchmarks/engine.py)
                                 pipeline=os.environ.get("VITSEARCH_ENGINE_PIPELINE", "1") != "0",
                                 reference=self.reference),
            trial_resources(str(session.device), cpus_per, plan.workers, ray.cluster_resources().get("GPU", 0),
                            local=not plan.address))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, max_concurrent_trials=plan.workers,
                                        reuse_actors=True, trial_name_creator=_short_name,
                                        trial_dirname_creator=_short_name),
            run_config=tune.RunConfig(
                name=f"attempt-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}",
                storage_path=str((plan.run_dir.path / "tune").resolve()), verbose=2 if plan.verbose else 0,
                failure_config=tune.FailureConfig(max_failures=2)))
        local = not plan.address  # Ray's system processes are this driver's children only when it started them
        ray_cpu0, driver_cpu0 = descendants_cpu() if local else None, time.process_time()
        started = time.time()
        ownership.start()
        budget = self.spec.search.time_budget_minutes
        if budget is not None:  # counted from here: Ray up, model loaded, workers not started yet
            searcher.deadline = started + 60.0 * budget
        try:
            with self.signals.fitting():
                tuner.fit()
            ended = time.time()
            drain_surplus(self.study, plan.trials)
        finally:
            if self.signals.received is not None:
                self._requeue_in_flight(ownership)
            ownership.close()
            frame = self._refresh()  # tables and progress as the storage has them, however fit ended
            self._progress_close()
        driver_cpu, ray_cpu1 = time.process_time() - driver_cpu0, descendants_cpu() if local else None
        if searcher.gave_up():
            raise SearchFailed(
                f"stopped after {searcher.failures_in_a_row} failed trials in a row; last error: "
                f"{searcher.last_error}; see {plan.run_dir.log_file} and trials.csv")
        books = engine_books(searcher.timings, started, ended, plan.workers)
        books.update(cpu_books(searcher.timings, driver_cpu, len(searcher.told), ray_cpu0, ray_cpu1))
        if searcher.exhausted():
            log.info("stopped: %d asks in a row were settled on cost or reused", searcher.idle_asks)
        self.stopped_at_time_budget = searcher.stopped_at_deadline
        # a stopped run ends now (a scheduler's grace period is short); its resume times them
        self.sitting = None if self.signals.received is not None else self._sitting(session, feas.predictor)
        return self._summary(frame, searcher.completed(), ended - started, books, session)

    def _requeue_in_flight(self, ownership) -> None:
        """After a stop signal: this driver's trials still RUNNING are failed and enqueued again (same parameters)."""
        from optuna.trial import TrialState

        from vitsearch.search.results.tables import ATTR_DRIVER

        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        mine = [t for t in running if t.user_attrs.get(ATTR_DRIVER) == ownership.me]
        for t in mine:
            if ownership.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                ownership.retry(self.study, ownership.storage.get_trial(t._trial_id))
        if mine:
            log.info("stopped by a signal: trials %s were in flight: failed, asked again on --resume",
                     [t.number for t in mine])

    def _sitting(self, session, predictor) -> dict | None:
        """The run's own sitting-to-sitting spread, when its latencies were measured with none known.

        A profile's spread already widens every measured interval; predicted latencies are
        re-measured by the report and pick. Otherwise the earliest measured candidates are
        timed again now (:mod:`vitsearch.search.engine.repeats`).
        """
        if predictor is not None or session.latency_kwargs().get("sitting_sd") is not None:
            return None
        print(f"vitsearch run: timing up to {REPEATS} early candidates again (how far a latency ratio moves "
              "between sittings; every interval reported includes it)", file=sys.stderr)
        return measure_repeats(self.study, session, self.spec.latency.interleave.confidence)

    def _open_study(self, space):
        """The Optuna study, this driver's :class:`Ownership` of its trials, and the sampler's seed offset.

        Trials that dead drivers left RUNNING are failed and enqueued again here (same
        parameters); another live driver's trials are left alone. Presets go in once,
        into an empty study; a preset in flight when its driver died is re-enqueued like
        any other trial. A driver joining an existing study (another driver's, or its own
        on --resume) draws with another seed, so that two drivers do not propose the same
        candidates; the one that creates the study keeps the study's seed (reproducible).
        """
        import warnings

        import optuna

        from vitsearch.search.engine.ownership import Ownership, RetryStale
        from vitsearch.search.engine.sharing import record_study

        # Optuna warns on every ask with heartbeats outside Study.optimize: this driver beats itself.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        retry = RetryStale()
        storage = open_storage(self.plan.storage_url, on_stale=retry)
        try:  # atomic: of drivers starting together on a new study, exactly one creates it
            storage.create_new_study([optuna.study.StudyDirection[d.upper()] for _, d in self.objectives],
                                     self.spec.name)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            created = False
        study = optuna.load_study(study_name=self.spec.name, storage=storage)
        record_study(study, self.spec)
        ownership = Ownership(study, storage, retry)
        reaped = ownership.reap(force=True)
        if reaped:
            log.info("trials %s were left RUNNING by a driver that stopped: failed, asked again", reaped)
        if created or not study.get_trials(deepcopy=False):
            for params in space.preset_params():  # the front always holds the uncompressed model
                study.enqueue_trial(params, skip_if_exists=True)
        return storage, ownership, 0 if created else os.getpid() % 100_000 + 1

    def _sampler_trials(self) -> int:
        """What the sampler is sized for: the run's target, or under a time budget the study's ``search.trials``.

        A time-budgeted run may be given a huge ``--trials`` so that time alone stops it;
        TPE's random start-up (a fifth) and NSGA-II's population must not scale with that.
        """
        s = self.spec.search
        return self.plan.trials if s.time_budget_minutes is None else min(self.plan.trials, s.trials)

    # ---- progress ----------------------------------------------------------------------
    def _progress_start(self, done: int) -> None:
        from tqdm.auto import tqdm

        self._t0, self._done0, self._done, self._tables_at = time.time(), done, done, 0.0
        self.bar = tqdm(total=self.plan.trials, initial=done, desc=f"study {self.spec.name}", unit="trial",
                        dynamic_ncols=True)

    def _progress_close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _on_settle(self, trial) -> None:
        """After every tell: log line and progress count; tables and front at most every TABLES_EVERY_S.

        The Optuna storage is the record (committed at each tell); the tables are views of
        it, rewritten in full, so refreshing them on every tell would cost the driver -
        which shares the CPU with the workers - more than the tell itself. They are
        always rewritten at the end of the run and on ``--resume``.
        """
        log.info("trial %d %s%s", trial.number, trial.state.name,
                 "" if trial.state.name == "COMPLETE" else
                 f": {trial.user_attrs.get('error') or trial.user_attrs.get('infeasible_reason')}")
        self._done += trial.state.name == "COMPLETE" and trial.user_attrs.get("reused_from") is None
        self._throttled_refresh()

    def _on_rung(self, number: int, rung: int) -> None:
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
        self._refresh()

    def _refresh(self):
        """Rewrite the tables from the storage, put their figures on the progress bar; the frame."""
        self._tables_at = time.monotonic()
        frame = write_tables(self.study, self.plan.run_dir.path)
        counts = run_counts(frame, len(self.spec.recovery.ladder))
        self._done = counts["evaluated"]
        front = pareto_front(frame, self.objectives)
        best = front["accuracy"].max() if not front.empty else float("nan")
        if self.bar is not None:
            self.bar.n = self._done
            rungs = "/".join(map(str, counts["reached_rung"]))
            self.bar.set_postfix_str(
                f"rungs {rungs}, settled {counts['settled_on_predicted_cost'] + counts['settled_on_measured_cost']}, "
                f"failed {counts['failed']}, infeasible {counts['infeasible']}, reused {counts['reused']}, "
                f"front {len(front)}, best feasible val acc {'n/a' if best != best else f'{best:.2%}'}, "
                f"{fastest_text(front)}, "
                f"ETA {eta_text(self._done, self.plan.trials, self._t0, self._done0)}")
            self.bar.refresh()
        return frame

    def _summary(self, frame, completed: int, seconds: float, books: dict, session) -> dict:
        from vitsearch.search.results.testacc import front_test_accuracy

        sitting = getattr(self, "sitting", None)
        front = widen_frame(pareto_front(frame, self.objectives), run_sitting_sd({"sitting": sitting}))
        path = self.plan.run_dir.path
        if not front.empty and session.data.test is not None:
            front = front_test_accuracy(session, path, front)  # the split the search never saw
        counts = run_counts(frame, len(self.spec.recovery.ladder))
        summary = {
            "run_dir": str(path), "completed": completed, "requested": self.plan.trials,
            "workers": self.plan.workers, "batch_size": self.plan.batch_size,
            "evaluations": books.get("evaluations", 0), "evaluation_seconds": books.get("evaluation_seconds", 0.0),
            # worker time not spent evaluating (this attempt): all-in, and per trial (steady state)
            "engine_overhead_share": books.get("engine_overhead_share"),
            "steady_overhead_share": books.get("steady_overhead_share"),
            "engine": books,
            **counts, "rungs": list(self.spec.recovery.ladder), "reduction": self.spec.recovery.reduction,
            "reference": vars(self.reference),
            "test_split": session.data.test_source,
            "pareto": front["number"].astype(int).tolist(), "seconds": round(seconds, 1),
            "time_budget_minutes": self.spec.search.time_budget_minutes,
            "stopped_at_time_budget": getattr(self, "stopped_at_time_budget", False),
            "pareto_test": [{k: _plain(int(r[k]) if k in INT_KEYS and r[k] == r[k] else r[k])
                             for k in ("number", "rung", "accuracy", "test_accuracy", "test_lo", "test_hi", "test_n")
                             if k in r} for _, r in front.iterrows()],
            "latency_source": self.latency_source,
            "sitting": sitting,
            "front_table": front_table(front),
        }
        summary.update(earlier_attempts(path / "summary.json", books))
        write_atomic(path / "summary.json", json.dumps({k: v for k, v in summary.items() if k != "front_table"},
                                                       indent=2))
        return summary


def earlier_attempts(path: Path, books: dict) -> dict:
    """This attempt's ``books`` with the earlier attempts' of a resumed run, from its last ``summary.json``.

    ``engine`` covers this attempt only (its start-up, drain and overhead are of one fit);
    ``engine_earlier_attempts`` keeps each earlier attempt's books, oldest first, and
    ``evaluations_all_attempts`` / ``evaluation_seconds_all_attempts`` add all of them up.
    An attempt killed before it wrote its summary left no books (its trials are in the storage).
    """
    try:
        prev = json.loads(path.read_text())
        earlier = [*prev.get("engine_earlier_attempts", []), {**prev.get("engine", {}), "seconds": prev.get("seconds")}]
    except (OSError, ValueError):
        earlier = []
    every = [*earlier, books]
    return {"engine_earlier_attempts": earlier,
            "evaluations_all_attempts": sum(b.get("evaluations", 0) for b in every),
            "evaluation_seconds_all_attempts": round(sum(b.get("evaluation_seconds", 0.0) for b in every), 2)}


#: summary fields that are counts, stored in float columns when another row has none
INT_KEYS = ("number", "rung", "test_n")


def _plain(value):
    """A JSON-ready scalar (numpy and NaN to plain / None)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def run_study(study: str | Path, opts: RunOptions) -> dict:
    """Run (or resume) a study to the requested number of completed trials; returns a summary."""
    plan = plan_run(study, opts)
    with plan.run_dir.locked(new=not plan.resume):  # one driver per run dir
        return Driver(plan).run()
