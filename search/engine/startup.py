"""What a run needs before its Tuner starts: its inputs, Ray, its logs and the Optuna study.

Contract, in the order the driver calls them:

* :func:`load_inputs` loads the model, data and space, the uncompressed model's accuracy
  (when an accuracy floor needs it) and costs, the run-start screen
  (:func:`~vitsearch.search.engine.gain.screen_space`) and the feasibility checks;
  model and data errors surface here, before anything is written.
* :func:`init_ray` joins the cluster at ``--address`` (a one-line ConfigError with the
  fix when it cannot) or starts a fresh local instance on loopback; a Ray already
  initialised in this process is kept.
* :func:`start_logging` sends vitsearch's, Ray's and Optuna's logs to the run's log file
  (Ray's console output too, unless ``--verbose``).
* :func:`open_study` opens the study (of drivers creating it together, exactly one
  does), fails and re-enqueues what dead drivers left RUNNING, and returns this driver's
  :class:`~vitsearch.search.engine.ownership.Ownership` and its sampler's seed offset.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import optuna

from vitsearch.search.engine.feasibility import Feasibility
from vitsearch.search.engine.gain import (Reference, keep_screen, reference_of, screen_machine, screen_space,
                                         stored_screen)
from vitsearch.search.engine.ownership import Ownership, RetryStale
from vitsearch.evaluators.latency.fingerprint import resolve_device
from vitsearch.search.engine.raylocal import init_local, reap
from vitsearch.search.engine.resources import physical_gpu
from vitsearch.search.engine.sharing import record_study
from vitsearch.search.preflight import runtime_search_space
from vitsearch.search.session import Session, load_session, study_predictor
from vitsearch.search.storage import open_storage
from vitsearch.spaces.errors import ConfigError

if TYPE_CHECKING:
    from vitsearch.search.engine.plan import RunPlan
    from vitsearch.spaces import SearchSpace

log = logging.getLogger("vitsearch.run")


@dataclass(frozen=True)
class RunInputs:
    """A run's loaded inputs: the session (model, data, device), the space, the checks, the reference."""

    session: Session
    space: SearchSpace
    feasibility: Feasibility
    base_accuracy: float | None
    reference: Reference


def load_inputs(plan: RunPlan, objectives: list[tuple[str, str]]) -> RunInputs:
    """Load what the run searches with; the space's notes (what the runtime cannot realise) are printed.

    The uncompressed model's accuracy is read from the run dir on ``--resume``, else
    evaluated only when ``max_accuracy_drop`` needs it.
    """
    spec = plan.spec
    session = load_session(spec)
    space, notes = runtime_search_space(spec, session.base, session.device, session.data.calibration)
    for note in notes:
        log.warning(note)
        print(f"note: {note}")
    c = spec.constraints
    base_acc = (plan.run_dir.meta() if plan.resume else {}).get("base_accuracy")
    if base_acc is None and c.max_accuracy_drop is not None:
        base_acc = session.base_val_accuracy()
    predictor = study_predictor(session)
    reference = reference_of(session, objectives, predictor)  # the no-gain line, before any worker
    if spec.search.screen and predictor is None and reference.cost_objectives == ("latency_ms",):
        machine = screen_machine(session)
        kept = stored_screen(plan, machine)  # timed at the study's first start: one verdict per value for the study
        if kept is not None:
            log.info("screen: %d rows as timed at the study's first start", len(kept))
        reference = replace(reference, screen_machine=machine, screen=kept if kept is not None else
                            screen_space(session, space, reference.latency_ratio or 1.0))
        for entry in (e for e in reference.screen if e["screened"]):
            note = (f"screened: {Reference.screen_finding(entry)}; candidates using it are settled without "
                    "evaluation (search.screen: false to evaluate them)")
            log.warning(note)
            print(f"note: {note}")
    feas = Feasibility(c.max_latency_ms, c.max_size_mb,
                       None if c.max_accuracy_drop is None else base_acc - c.max_accuracy_drop,
                       predictor=predictor, predictor_fingerprint=getattr(predictor, "fingerprint_id", None))
    return RunInputs(session, space, feas, base_acc, reference)


def latency_source(inputs: RunInputs) -> str:
    """Where the run's latencies come from, in words (printed at the start, kept in the summary)."""
    feas = inputs.feasibility
    if not feas.predictor:
        return f"measured on {inputs.session.device} for every candidate (no fitted profile)"
    cal = feas.predictor.state.get("calibration") or {}
    return ("predicted by the latency predictor fitted on this device (fingerprint "
            f"{feas.predictor_fingerprint}"
            + (f", calibrated x{cal['factor']:.3f}: {cal['how']}" if cal else "")
            + "); the report and pick re-measure")


def start_logging(plan: RunPlan) -> None:
    """vitsearch, Ray and Optuna log to the run's log file; Ray's console handlers go unless ``--verbose``."""
    import ray  # noqa: F401  (installs Ray's own stderr handler, which is replaced below)

    handler = logging.FileHandler(plan.run_dir.log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("vitsearch", "ray", "optuna"):
        lg = logging.getLogger(name)
        if not plan.verbose:
            for h in [h for h in lg.handlers if isinstance(h, logging.StreamHandler)
                      and not isinstance(h, logging.FileHandler)]:
                lg.removeHandler(h)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = plan.verbose and name != "vitsearch"
    optuna.logging.disable_default_handler()


def init_ray(plan: RunPlan) -> None:
    """Join ``plan.address`` or start a local Ray on loopback (its session noted in the run dir's lock)."""
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
    kwargs = dict(include_dashboard=False, log_to_driver=plan.verbose,
                  logging_level=logging.INFO if plan.verbose else logging.ERROR)
    if not plan.address:
        # "local": always a fresh local instance, never a cluster that `ray start` left on this machine;
        # on 127.0.0.1; its session is noted in the run dir's lock, and what a killed driver left is reaped
        reap(plan.run_dir.previous_ray_session())
        # a CUDA study's Ray sees its GPU alone: every trial runs on the device the study names
        gpu = physical_gpu(str(resolve_device(plan.spec.device)), os.environ.get("CUDA_VISIBLE_DEVICES"))
        plan.run_dir.note_ray_session(init_local(plan.cpus, gpu=gpu, **kwargs))
        return
    try:
        ray.init(address=plan.address, **kwargs)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[-1][:240] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--address: could not join the Ray cluster at {plan.address!r} ({detail}); "
                          "with token authentication set RAY_AUTH_MODE=token and share the cluster's token "
                          "(ray get-auth-token)") from None


def open_study(plan: RunPlan, objectives: list[tuple[str, str]], space: SearchSpace,
               reference: Reference) -> tuple[Any, Ownership, int, Reference]:
    """The raw Optuna storage, this driver's :class:`Ownership` of the study's trials, the sampler's seed offset,
    and ``reference`` with the screen in force (:func:`~vitsearch.search.engine.gain.keep_screen`).

    Trials that dead drivers left RUNNING are failed and enqueued again here (same
    parameters); another live driver's trials are left alone. Presets go in once, into
    an empty study; a preset in flight when its driver died is re-enqueued like any
    other trial. A driver joining an existing study (another driver's, or its own on
    --resume) draws with another seed, so that two drivers do not propose the same
    candidates; the one that creates the study keeps the study's seed (reproducible).
    """
    # Optuna warns on every ask with heartbeats outside Study.optimize: this driver beats itself.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    name = plan.spec.name
    retry = RetryStale()
    storage = open_storage(plan.storage_url, on_stale=retry)
    try:  # atomic: of drivers starting together on a new study, exactly one creates it
        storage.create_new_study([optuna.study.StudyDirection[d.upper()] for _, d in objectives], name)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=name, storage=storage)
    record_study(study, plan.spec)  # first: a driver with another study file, starting beside this one, is refused
    if created:  # at once: a driver starting beside this one finds them instead of enqueueing its own
        _enqueue_presets(study, space)
    ownership = Ownership(study, storage, retry)
    reaped = ownership.reap(force=True)
    if reaped:
        log.info("trials %s were left RUNNING by a driver that stopped: failed, asked again", reaped)
    if not created and not _trials_arrive(study):  # its creator died first, or a user's own study
        _enqueue_presets(study, space)
    return storage, ownership, 0 if created else os.getpid() % 100_000 + 1, keep_screen(study, reference, created)


#: how long a driver that found a study just created by another waits for that driver's presets
PRESET_WAIT_S = 3.0


def _trials_arrive(study: optuna.Study, wait_s: float = PRESET_WAIT_S) -> bool:
    """Whether ``study`` holds trials, waiting up to ``wait_s`` (plus up to a second at random) for the driver
    that created it to enqueue its presets (it does so right after creating it; an empty study after that had a
    creator that died first, or was created outside vitsearch). The random part keeps two drivers joining an
    empty study together from enqueueing at the same moment: the later finds the earlier's presets."""
    deadline = time.monotonic() + wait_s + random.uniform(0.0, 1.0)
    while not study.get_trials(deepcopy=False):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _enqueue_presets(study: optuna.Study, space: SearchSpace) -> None:
    """The presets (the front always holds the uncompressed model), each unless the study holds it already.

    Enqueued twice (two drivers each finding the other's not yet written), a preset's copies
    are never evaluated twice (:mod:`vitsearch.search.engine.sharing`: the later is a
    duplicate or a reuse) but may both be dropped as each other's duplicate when asked at
    the same moment: hence the creator enqueues them at once and a driver beside it waits
    for them (:func:`_trials_arrive`).
    """
    for params in space.preset_params():
        study.enqueue_trial(params, skip_if_exists=True)

