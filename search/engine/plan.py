"""Planning a run: the study and options validated, resolved into a :class:`RunPlan`.

Everything is validated (study, options, storage, Ray address, model, data) before the
run dir is created, so bad input leaves nothing behind. The Optuna storage (SQLite in
the run dir by default; any SQLAlchemy URL or ``journal:<file>``) holds every trial; a
killed driver is resumed with ``--resume RUN_DIR``: the trials it left RUNNING are failed
and asked again with the same parameters (``engine/ownership.py``), and the run goes on
until the study holds the requested number of completed trials. Several drivers may
share one study (``--storage``, same study name): ``engine/sharing.py``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vitsearch.search.paths import absolute_storage_url
from vitsearch.search.preflight import check_out_dir, check_study, check_workers
from vitsearch.search.results.rundir import RunDir
from vitsearch.search.storage import open_storage, password_to_env, storable_url
from vitsearch.search.study import StudySpec, load_study
from vitsearch.spaces.errors import ConfigError

log = logging.getLogger("vitsearch.run")


@dataclass
class RunOptions:
    """Command-line overrides of the study's search settings."""

    trials: int | None = None
    workers: int | None = None
    out: str | None = None
    address: str | None = None
    storage: str | None = None
    resume: str | None = None
    verbose: bool = False
    batch_size: int | None = None


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name}: must be a positive integer, got {value}")


def check_address(address: str) -> None:
    """Fail fast (one line) when a Ray head is not reachable at ``host:port``."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379, as printed by `ray start --head`)")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise ConfigError(f"--address: no Ray head reachable at {address!r} ({exc.strerror or exc}); "
                          "start one with `ray start --head` or drop --address to run locally") from None
    if not _speaks_grpc(host, int(port)):
        raise ConfigError(f"--address: {address!r} answers but is not a Ray head (no gRPC service there); give "
                          "the GCS address `ray start --head` printed (default port 6379)")


def _speaks_grpc(host: str, port: int) -> bool:
    """Whether ``host:port`` answers the HTTP/2 preface with a SETTINGS frame, as Ray's GCS (gRPC) does.

    Without this, ``ray.init`` on a port held by something else (a database, a web
    server) retries for a minute before it fails.
    """
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        with socket.create_connection((host, port), timeout=3) as sock:
            sock.sendall(preface)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return len(head) == 9 and head[3] == 0x04


def make_sampler(spec: StudySpec, trials: int, seed_offset: int = 0):
    """NSGA-II (the schema's default), TPE (multivariate, constant liar), GP (Gaussian process, logCEHVI) or random, seeded
    (``search.seed + seed_offset``).

    Constraint-aware through the constraints the searcher sets on each trial
    (``Trial.set_constraint``) before telling it.
    """
    import optuna

    s = spec.search.model_copy(update={"seed": (spec.search.seed + seed_offset) % 2**32})  # numpy seeds are 32-bit
    if s.sampler == "nsga2":
        population = s.population_size or max(6, min(20, trials // 4))
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=population)
    startup = s.startup_trials or max(5, trials // 5)
    if s.sampler == "tpe":
        # at most 10 random trials first (Optuna's own default): measured at 200 trials x 3 seeds, TPE reached
        # random search's 200-trial hypervolume in 41 trials after 10, in 56 after a fifth (40) (docs/results.md)
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=s.startup_trials or min(startup, 10))
    if s.sampler == "gp":  # Optuna >= 4.5: constrained multi-objective (logCEHVI) from Trial.set_constraint
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=s.seed)


@dataclass
class RunPlan:
    """A validated run: what the driver needs, resolved before anything is written."""

    spec: StudySpec
    run_dir: RunDir
    resume: bool
    trials: int
    workers: int
    cpus: int
    storage_url: str
    address: str | None
    batch_size: int
    verbose: bool


def plan_run(study: str | Path, opts: RunOptions) -> RunPlan:
    """Validate the study and options; nothing is written."""
    _positive("--trials", opts.trials)
    _positive("--workers", opts.workers)
    _positive("--batch-size", opts.batch_size)
    given = load_study(study)
    spec = _without_password(given)
    if opts.resume:
        run_dir = RunDir(Path(opts.resume))
        spec = run_dir.check_resumable(spec)
        meta = run_dir.meta()
    else:
        run_dir = RunDir(Path(opts.out) if opts.out else spec.run_dir())
        check_out_dir(run_dir.path, "--out" if opts.out else "output_dir")
        run_dir.refuse_if_run()
        meta = {}
    s = spec.search
    trials = opts.trials or meta.get("trials") or s.trials
    workers = opts.workers or s.workers
    cpus = s.cpus or os.cpu_count() or 1
    address = opts.address or s.ray_address
    check_workers(workers, cpus, local=not address, flag="--workers" if opts.workers else "search.workers")
    check_study(spec)
    # --storage is relative to the working directory (the study's own was anchored at load)
    cli_storage = absolute_storage_url(opts.storage, Path.cwd()) if opts.storage else None
    storage_url = cli_storage or meta.get("storage") or s.storage or run_dir.default_storage_url()
    storage_url = password_to_env(storage_url)  # nothing this driver keeps (or Tune pickles) holds the password
    if not storage_url.startswith("sqlite:///") or storage_url != run_dir.default_storage_url():
        from vitsearch.search.engine.sharing import check_same_study

        check_same_study(open_storage(storage_url), spec)  # fail before writing anything
    if address:
        check_address(address)
    batch = opts.batch_size or s.batch_size or max(1, min(8, trials // (4 * workers)))
    return RunPlan(spec, run_dir, bool(opts.resume), trials, workers, cpus, storage_url, address, batch, opts.verbose)


def _without_password(spec: StudySpec) -> StudySpec:
    """The study with a storage password dropped: the run dir's study.yaml never holds it.

    The URL with the password is still what this driver connects with (``RunPlan.storage_url``
    comes from the study file as given).
    """
    url = spec.search.storage
    if not url or storable_url(url) == url:
        return spec
    return spec.model_copy(update={"search": spec.search.model_copy(update={"storage": storable_url(url)})})


def eta_text(done: int, total: int, started: float, done_at_start: int) -> str:
    rate = (done - done_at_start) / max(time.time() - started, 1e-9)
    return "?" if rate <= 0 else f"{math.ceil((total - done) / rate)} s"

