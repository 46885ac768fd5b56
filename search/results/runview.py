"""A finished (or running) run dir read back for reporting and picking.

:func:`load_run` opens the run's Optuna study (the source of truth), derives the trial
table and the Pareto front, and refuses a directory that is not a run dir or holds no
completed trial. :func:`remeasure_front` times the front (or the rows given) again on this
machine, but only when this machine's device fingerprint is the one the study's latencies
carry: a latency from another device would be compared with nothing it can predict.
:func:`top_rung_pool` is what ``pick --choose-by teacher`` ranks: the front and the other
candidates that reached the top rung.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vitsearch.search.results.rundir import RunDir
from vitsearch.search.results.sitting import read_summary, run_sitting_sd, widen_frame
from vitsearch.search.study import StudySpec
from vitsearch.spaces.errors import ConfigError, VitsearchError


@dataclass
class RunView:
    """A run dir's spec, metadata, Optuna study, trial table and Pareto front."""

    path: Path
    spec: StudySpec
    meta: dict[str, Any]
    study: Any
    frame: pd.DataFrame
    front: pd.DataFrame
    objectives: list[tuple[str, str]]
    basis: Any  # the run's ms basis (:class:`~vitsearch.search.results.basis.MsBasis`): list, report, pick state ms on it
    _rungs: dict | None = None  # rung records (rung >= 1) by trial number, read on first use

    def meta_summary(self) -> dict[str, Any]:
        """The run's summary.json (empty while the run has not finished once)."""
        return read_summary(self.path)

    @property
    def base_accuracy(self) -> float | None:
        """The uncompressed model's accuracy measured at the start of the run (None if not recorded, or NaN)."""
        acc = self.meta.get("base_accuracy")
        return None if acc is None or acc != acc else acc

    @property
    def min_accuracy(self) -> float | None:
        """Base accuracy minus the study's allowed drop (None without that constraint)."""
        drop = self.spec.constraints.max_accuracy_drop
        return None if drop is None or self.base_accuracy is None else self.base_accuracy - drop

    def evaluation(self, number: int) -> dict[str, Any]:
        """The stored evaluation record of trial ``number`` at the highest rung it reached."""
        from vitsearch.search.results.tables import rung_attrs

        if self._rungs is None:
            self._rungs = rung_attrs(self.study.user_attrs)[0]
        later = self._rungs.get(number)
        if later:
            return later[max(later)].get("evaluation") or {}
        return self.study.trials[number].user_attrs.get("evaluation") or {}

    def study_fingerprint(self) -> dict[str, Any]:
        """The device fingerprint most front (else completed) trials were timed on."""
        rows = self.front if not self.front.empty else self.frame[self.frame["state"] == "COMPLETE"]
        fps = [self.evaluation(int(n)).get("fingerprint") or {} for n in rows["number"]]
        fps = [fp for fp in fps if fp.get("fingerprint_id")]
        if not fps:
            return {}
        common = Counter(fp["fingerprint_id"] for fp in fps).most_common(1)[0][0]
        return next(fp for fp in fps if fp["fingerprint_id"] == common)


def load_run(path: str | Path) -> RunView:
    """Open ``path`` as a run dir; ConfigError (exit 2) if it is not one or has no completed trial."""
    import optuna

    from vitsearch.search.storage import journal_file, open_storage, sqlite_file
    from vitsearch.search.results.basis import in_basis_order, study_basis
    from vitsearch.search.results.tables import pareto_front, trials_frame

    run = RunDir(Path(path))
    if not run.is_run_dir():
        raise ConfigError(f"RUN_DIR: {str(path)!r} is not a vitsearch run dir (no study.yaml and run.json); "
                          "give a directory written by `vitsearch run`")
    meta, spec = run.meta(), run.spec()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = meta.get("storage") or run.default_storage_url()
    db = sqlite_file(url) or journal_file(url)
    if db is not None and not db.exists():  # opening it would create an empty one: reading writes nothing
        raise ConfigError(f"RUN_DIR: {str(path)!r}: its storage file {str(db)!r} does not exist; was it moved "
                          "or deleted? (run.json names the storage the run wrote to)")
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=meta.get("study_name", spec.name), storage=storage)
    except KeyError:
        raise ConfigError(f"RUN_DIR: {str(path)!r} has no Optuna study {meta.get('study_name')!r} in its storage; "
                          "was the run started? (`vitsearch run STUDY --out DIR`)") from None
    # every interval read back includes the spread between sittings the run measured itself (no profile)
    summary = read_summary(run.path)
    frame = widen_frame(trials_frame(study), run_sitting_sd(summary))
    if not (frame["state"] == "COMPLETE").any():
        raise ConfigError(f"RUN_DIR: {str(path)!r} holds no completed trial yet; let `vitsearch run` "
                          f"finish at least one (resume with --resume {path})")
    objectives = [(o.metric, o.direction) for o in spec.objectives]
    basis = study_basis(study, (summary.get("reference") or {}).get("latency_ratio"))  # read once: every table's
    front = in_basis_order(pareto_front(frame, objectives), basis)
    return RunView(Path(path), spec, meta, study, frame, front.reset_index(drop=True), objectives, basis)


def top_rung_pool(view: RunView) -> pd.DataFrame:
    """The front and every other feasible trial that reached the top rung of a study with rungs, by latency.

    The front is selected on val top-1, which moves by whole images: a variant one val image
    below a faster one is off it, though it may follow the teacher more closely - and the
    KL from the teacher ordered the top-rung candidates' test top-1 better than val top-1
    (docs/results.md, "Choosing the variant by the teacher"). The top rung's trials were
    already promoted as the best-looking ones and trained as long as the front's, so they
    are compared as equals. A study without rungs: the front alone (every trial would be a
    candidate, each rebuilt and re-measured).
    """
    if len(view.spec.recovery.ladder) < 2:
        return view.front
    from vitsearch.search.results.tables import eligible

    ok = eligible(view.frame, view.objectives)
    top = ok[ok["rung"] == len(view.spec.recovery.ladder) - 1]
    pool = pd.concat([view.front, top[~top["number"].isin(view.front["number"])]])
    return pool.sort_values(["latency_ms", "number"]).reset_index(drop=True)


def pool_name(view: RunView, rows: pd.DataFrame) -> str:
    """What ``rows`` are, as pick names its variants: "Pareto" where all are on the front, else "top-rung or Pareto"."""
    return "Pareto" if set(rows["number"]) <= set(view.front["number"]) else "top-rung or Pareto"


@dataclass
class Remeasure:
    """Whether and how the front's latencies were checked on this machine."""

    done: bool
    why: str
    here: dict[str, Any] = field(default_factory=dict)
    table: pd.DataFrame | None = None  # number, recorded_*, remeasured_* per front row


def current_fingerprint(spec: StudySpec) -> dict[str, Any]:
    """This machine's fingerprint for the study's device, thread count and runtime (as measurements see it)."""
    from vitsearch.evaluators import resolve_device
    from vitsearch.evaluators.latency.timing.prepare import default_threads
    from vitsearch.evaluators.runtimes.deploy import runtime_fingerprint

    dev = resolve_device(spec.device)
    threads = spec.latency.threads or default_threads() if dev.type == "cpu" else None
    return runtime_fingerprint(dev, threads, spec.latency.runtime)  # names a runtime other than eager, and its version


def check_remeasure(view: RunView) -> Remeasure:
    """Decide whether the front can be re-measured here (fingerprint ids must match)."""
    study_fp = view.study_fingerprint()
    try:
        here = current_fingerprint(view.spec)
    except VitsearchError as exc:  # the study's device is absent here
        return Remeasure(False, f"not re-measured: the study's device or runtime is not available here ({exc})")
    want = study_fp.get("fingerprint_id")
    if want != here["fingerprint_id"]:
        return Remeasure(False, f"not re-measured: this machine's fingerprint {here['fingerprint_id']} differs "
                                f"from the study's {want}; latencies are as recorded for the study's device", here)
    rebuilt = here.get("runtime")  # a fingerprint names the runtime where it builds programs of its own
    where = f", each variant built again in {rebuilt} {here.get('runtime_version')}" if rebuilt else ""
    return Remeasure(True, f"re-measured on this machine (fingerprint {want} matches the study's{where})", here)


def remeasure_front(view: RunView, session=None, progress: bool = True, rows: pd.DataFrame | None = None) -> Remeasure:
    """Time every front config (or every row of ``rows``) again when the fingerprint matches; else say why not."""
    rows = view.front if rows is None else rows
    check = check_remeasure(view)
    if not check.done or rows.empty:
        return check
    from tqdm import tqdm

    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig

    session = session or load_session(view.spec)
    session.adopt_sitting_sd(run_sitting_sd(view.meta_summary()))
    table = []
    what = "the front" if pool_name(view, rows) == "Pareto" else "the candidates"
    for _, r in tqdm(list(rows.iterrows()), desc=f"re-measuring {what}", unit="variant", disable=not progress):
        res = session.pipeline.measure_config(CompressionConfig.from_dict(json.loads(r["config"])))  # as the search timed it
        table.append(remeasure_row(r, res))
    check.table = pd.DataFrame(table)
    return check


def remeasure_row(r: Any, res: Any) -> dict[str, Any]:
    """One front row re-measured (interleaved): both latencies, their intervals and ratios, the error.

    ``rel_error`` compares ratios to the uncompressed model where both sides have one (the
    machine's drift between search and now cancels), else milliseconds.
    """
    recorded_ratio = r.get("latency_ratio")
    by_ratio = recorded_ratio is not None and recorded_ratio == recorded_ratio and res.ratio is not None
    err = recorded_ratio / res.ratio - 1.0 if by_ratio else r["latency_ms"] / res.median_ms - 1.0
    return {"number": int(r["number"]), "recorded_ms": r["latency_ms"], "recorded_source": r["latency_source"],
            "recorded_low_ms": r.get("latency_low_ms"), "recorded_high_ms": r.get("latency_high_ms"),
            "recorded_confidence": r.get("latency_confidence"),
            "recorded_ratio": recorded_ratio, "remeasured_ms": res.median_ms, "remeasured_low_ms": res.low_ms,
            "remeasured_high_ms": res.high_ms, "remeasured_confidence": res.confidence,
            "remeasured_ratio": res.ratio, "remeasured_p10_ms": res.p10_ms, "remeasured_p90_ms": res.p90_ms,
            "remeasured_runs": res.n_runs, "rel_error": err, "compared": "ratio" if by_ratio else "ms"}


def front_latency(view: RunView, check: Remeasure, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The front (or ``rows``) with ``budget_ms``/``budget_source``: re-measured latency where available, else recorded.

    ``budget_high_ms`` / ``budget_confidence``: the high end of that latency's interval and
    the interval's two-sided confidence (the point estimate and None where none was recorded).
    """
    front = (view.front if rows is None else rows).copy()
    if check.table is not None and not check.table.empty:
        missing = set(front["number"]) - set(check.table["number"])
        if missing:  # a row judged on nothing would drop out of the budget unsaid
            raise ValueError(f"front_latency: trial(s) {sorted(missing)} were not re-measured with the others")
        front = front.merge(check.table[["number", "remeasured_ms", "remeasured_low_ms", "remeasured_high_ms",
                                         "remeasured_confidence", "remeasured_p10_ms", "remeasured_p90_ms",
                                         "remeasured_runs", "remeasured_ratio"]], on="number", how="left")
        front["budget_ms"] = front["remeasured_ms"]
        front["budget_high_ms"] = front["remeasured_high_ms"].fillna(front["remeasured_ms"])
        front["budget_confidence"] = front["remeasured_confidence"]
        front["budget_source"] = "measured, re-measured here"
    else:
        front["budget_ms"] = front["latency_ms"]
        front["budget_high_ms"] = front["latency_high_ms"].fillna(front["latency_ms"])
        front["budget_confidence"] = front["latency_confidence"]
        front["budget_source"] = front["latency_source"].map(lambda s: f"{s} (as recorded)")
    return front
