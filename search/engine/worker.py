"""What runs inside a Ray worker: evaluate a batch of candidates, report each one.

The study's :class:`~vitsearch.search.session.Session` (base model and data) reaches a
worker once through Ray's object store; the worker keeps it for every later trial it
runs (Tune reuses the actor), so nothing is reloaded or re-sent per trial.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
import traceback
from typing import Any

_SESSIONS: dict[str, Any] = {}


def _session(holder: list) -> Any:
    import ray

    from vitsearch.search.engine.resources import worker_device

    ref = holder[0]
    key = ref.hex()
    if key not in _SESSIONS:
        _SESSIONS.clear()  # one study per worker process at a time
        session = ray.get(ref)  # shipped with its model on the CPU (Session.for_search)
        _SESSIONS[key] = session.placed(worker_device(str(session.device), ray.get_gpu_ids()))
    return _SESSIONS[key]


def evaluate_candidate(session, cand: dict, feasibility, predictor=None, reference=None) -> dict:
    """Evaluate one job (a new candidate at the first rung, or a promotion); every outcome becomes a payload.

    ``cand``: ``number``, ``config``, and for rungs ``rung`` (0: first evaluation),
    ``save_to`` (checkpoint to write), ``load_from`` and ``first`` (a promotion: the
    previous rung's checkpoint and the candidate's first-rung metrics).
    """
    from vitsearch.spaces import CompressionConfig

    start, cpu0 = time.perf_counter(), time.thread_time()
    number, rung = cand.get("number"), cand.get("rung", 0)
    payload: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}", "node": _node(),
                               "started_at": time.time(), "rung": rung}
    try:
        _inject_faults_for_tests(number, rung, cand.get("config"))
        config = CompressionConfig.from_dict(cand["config"])
        pipeline = session.pipeline
        if rung == 0:
            metrics, reason = pipeline.evaluate(config, feasibility=feasibility, predictor=predictor,
                                                reference=reference, save_to=cand.get("save_to"))
        else:
            metrics, reason = pipeline.promote(config, cand["first"], rung, cand["load_from"], cand.get("save_to"),
                                               feasibility=feasibility)
        settled = None if metrics["accuracy"] is not None else (
            "no gain" if reason.startswith("no gain") else "cost budget")
        payload.update(evaluation=_jsonable(metrics), feasible=reason is None, infeasible_reason=reason,
                       constraints=feasibility.constraints(metrics), settled=settled)
    except Exception as exc:  # recorded as a FAIL trial with its message; the study goes on
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        payload["error"] = f"{type(exc).__name__}: {exc}{where}"
        payload["config_determined"] = config_determined(exc)
    payload["seconds"] = round(time.perf_counter() - start, 4)
    payload["cpu_seconds"] = round(time.thread_time() - cpu0, 4)  # this thread's CPU (torch at 1 thread: all of it)
    payload["finished_at"] = time.time()
    payload["process_cpu_seconds"] = round(time.process_time(), 3)  # the worker process so far, for the engine's books
    return payload


def config_determined(exc: BaseException) -> bool:
    """Whether ``exc`` follows from the candidate's config alone: asked again, that config fails the same way.

    So are a numerics mismatch and any error marked ``config_determined`` (a build the
    runtime refuses for this candidate). Anything else (out of memory, a lost worker, a
    missing package, a library fault) may pass on another try or on another worker.
    """
    from vitsearch.evaluators.runtimes.base import NumericsMismatch

    return isinstance(exc, NumericsMismatch) or getattr(exc, "config_determined", False) is True


def evaluate_batch(config: dict, session_holder: list, feasibility, predictor=None, threads: int = 1,
                   pipeline: bool = True, reference=None) -> None:
    """Tune function trainable: evaluate the batch's candidates in order, one report each.

    ``tune.report`` blocks until Tune's controller has taken the result (a round trip
    through the driver: Optuna tell, tables, progress). With ``pipeline`` (the default)
    the candidates are evaluated on a second thread that runs ahead, so that round trip
    overlaps the next candidate's evaluation instead of stalling the worker; results are
    still reported in order, each once.
    """
    import torch
    from ray import tune

    torch.set_num_threads(threads)  # process-wide: the evaluation thread uses it too
    _restore_priority()
    session = _session(session_holder)
    candidates = config["candidates"]

    def evaluate(cand: dict) -> dict:
        payload = evaluate_candidate(session, cand, feasibility, predictor, reference)
        payload["number"] = cand["number"]
        payload["niceness"] = os.getpriority(os.PRIO_PROCESS, 0)
        return payload

    def report(payload: dict) -> None:
        # Tune flattens nested result dicts before the searcher sees them: send JSON text.
        tune.report({"candidate_json": json.dumps(payload), "candidate_number": payload["number"]})

    if not pipeline:
        for cand in candidates:
            report(evaluate(cand))
        return
    done: queue.Queue = queue.Queue()
    stop = threading.Event()  # set when Tune stops this trial early (report raises SystemExit)

    def produce() -> None:
        for i, cand in enumerate(candidates):
            if stop.is_set():
                return
            try:
                done.put(evaluate(cand))
            except BaseException as exc:  # evaluate_candidate catches Exception; this is the rest
                why = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                for rest in candidates[i:]:
                    done.put({"number": rest["number"], "error": f"evaluation thread stopped: {why}"})
                return

    runner = threading.Thread(target=produce, name="vitsearch-evaluate", daemon=True)
    runner.start()
    try:
        for _ in candidates:
            report(done.get())
    finally:
        # never leave an evaluation running into the next batch of a reused actor
        stop.set()
        runner.join()


class InjectedConfigFault(Exception):
    """A test fault that, like a numerics mismatch, fails its config every time (VITSEARCH_TEST_FAULTS)."""

    config_determined = True


def _inject_faults_for_tests(number: int, rung: int = 0, config: dict | None = None) -> None:
    """Fault injection for the test suite, off unless VITSEARCH_TEST_FAULTS is set.

    VITSEARCH_TEST_FAULTS is JSON: ``{"raise_on": [trial numbers], "fail_config": [configs],
    "crash_once": marker path, "hang_on_rung": [rung, marker path]}``; ``raise_on`` makes
    those candidates raise (an error that may pass on another try), ``fail_config`` makes
    every candidate with one of those configs (as dicts) raise :class:`InjectedConfigFault`,
    ``crash_once`` kills this worker process mid-trial the first time (the marker file
    records that it happened); ``hang_on_rung`` writes the marker and sleeps when a
    promotion to that rung starts (the test kills the driver then).
    """
    spec = os.environ.get("VITSEARCH_TEST_FAULTS")
    if not spec:
        return
    faults = json.loads(spec)
    hang = faults.get("hang_on_rung")
    if hang and rung == hang[0]:
        with open(hang[1], "a") as fh:
            fh.write(f"{number}:{rung}\n")
        time.sleep(3600)
    marker = faults.get("crash_once")
    if marker and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(number))
        os._exit(1)
    if number in faults.get("raise_on", []):
        raise RuntimeError(f"injected fault for trial {number} (VITSEARCH_TEST_FAULTS)")
    if config is not None and json.dumps(config, sort_keys=True) in {
            json.dumps(c, sort_keys=True) for c in faults.get("fail_config", [])}:
        raise InjectedConfigFault(f"injected fault for config {config} (VITSEARCH_TEST_FAULTS)")


def _node() -> str | None:
    """``IP node-id`` of the Ray node this worker runs on (which machine evaluated a trial), None outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return f"{ray.util.get_node_ip_address()} {ray.get_runtime_context().get_node_id()[:12]}"
    except Exception:  # recording where it ran must never fail an evaluation
        return None


def _restore_priority() -> None:
    """Ray starts workers at niceness 15; timings taken there lose to any other process.

    Raising priority back to 0 needs privileges; where it is refused the niceness is
    recorded with every result instead.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except (PermissionError, OSError):
        pass


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj
