"""One study, several drivers: the shared target and configs never evaluated twice.

Every driver of a study (a shared PostgreSQL storage, or a resumed run beside a live
one) counts the *study's* trials toward the one requested number, and decides for each
trial it asks, from the storage, whether to evaluate it:

* **surplus**: ``target`` trials with lower numbers are already WAITING, RUNNING or
  evaluated (COMPLETE, not reused): two drivers asked for the last slot at once; the
  later trial is dropped (PRUNED), so the study never ends with more than the requested
  evaluations.
* **reuse**: an identical config was evaluated (COMPLETE) or settled on its cost
  (PRUNED with ``settled``): its record is reused, in the same state.
* **duplicate**: an identical config is RUNNING under another trial (any driver), or
  WAITING to be asked again: this trial is dropped (PRUNED). Each trial writes its config
  before it reads the others', so of two trials racing for one config at most one
  evaluates it (the one that reads second always sees the first).
* **failed**: an identical config FAILED with an error that follows from the config
  (attribute :data:`ATTR_DETERMINISTIC`, written from the worker's verdict on the
  exception): asked again it would fail the same way, so this trial is settled PRUNED at
  once with that error and :data:`ATTR_REPEATS` naming the trial it repeats. A failure
  that may pass on another try (out of memory, a lost worker) is not one of these.

Trial numbers are assigned when a trial is created, so "lower-numbered" is a global
order all drivers agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from vitsearch.search.results.tables import (ATTR_CONFIG, ATTR_DETERMINISTIC, ATTR_ERROR, ATTR_REPEATS, ATTR_REUSED,
                                             ATTR_SETTLED)

_LIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)


@dataclass(frozen=True)
class Verdict:
    """What to do with a freshly asked trial: ``evaluate``, ``reuse`` (of ``source``), ``duplicate``, ``failed``
    (``source`` failed so for its config) or ``surplus``."""

    action: str
    source: int | None = None
    why: str | None = None

    def attrs(self) -> dict:
        """User attributes of a trial this verdict drops (PRUNED): why, and for ``failed`` which trial it repeats."""
        return {ATTR_ERROR: self.why, ATTR_REPEATS: self.source if self.action == "failed" else None}


def _counts_toward_target(t) -> bool:
    """WAITING, RUNNING, or evaluated here (COMPLETE and not a reuse of another trial's metrics)."""
    return t.state != TrialState.COMPLETE or t.user_attrs.get(ATTR_REUSED) is None


def counts(study: optuna.Study) -> dict[str, int]:
    """The study's trials by state (all drivers): COMPLETE (evaluated, reuses left out), RUNNING, WAITING."""
    out = {"COMPLETE": 0, "RUNNING": 0, "WAITING": 0}
    for t in study.get_trials(deepcopy=False, states=_LIVE):
        if _counts_toward_target(t):
            out[t.state.name] += 1
    return out


def verdict(study: optuna.Study, trial: optuna.Trial, key: str, target: int) -> Verdict:
    """Decide, from one read of the storage, whether ``trial`` (config ``key`` already written) is evaluated."""
    others = [t for t in study.get_trials(deepcopy=False, states=(*_LIVE, TrialState.PRUNED, TrialState.FAIL))
              if t.number != trial.number]
    lower = sum(1 for t in others if t.number < trial.number and t.state in _LIVE and _counts_toward_target(t))
    if lower >= target:
        return Verdict("surplus", why=f"surplus: the study already holds {lower} trials asked before it "
                                      f"(target {target}; another driver took the last slot)")
    same = [t for t in others if t.user_attrs.get(ATTR_CONFIG) == key]
    done = [t for t in same if t.user_attrs.get(ATTR_REUSED) is None and (
        t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and t.user_attrs.get(ATTR_SETTLED)))]
    if done:
        return Verdict("reuse", source=min(t.number for t in done))
    failed = [t for t in same if t.state == TrialState.FAIL and t.user_attrs.get(ATTR_DETERMINISTIC)]
    if failed:
        first = min(failed, key=lambda t: t.number)
        return Verdict("failed", source=first.number,
                       why=f"repeats trial {first.number}, whose config failed for good: "
                           f"{first.user_attrs.get(ATTR_ERROR)}; not evaluated again")
    pending = [t for t in same if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if pending:
        first = min(pending, key=lambda t: t.number)
        return Verdict("duplicate", source=first.number,
                       why=f"duplicate of trial {first.number} ({first.state.name.lower()}, same config); "
                           "not evaluated twice")
    return Verdict("evaluate")


def drain_surplus(study: optuna.Study, target: int) -> int:
    """Once ``target`` trials are COMPLETE, settle trials still WAITING (retries nobody needs) as PRUNED.

    Returns how many were settled. Asking pops WAITING trials first, so this takes exactly them.
    """
    n = 0
    while counts(study)["COMPLETE"] >= target and study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()  # a WAITING one, or (another driver popped the last first) a fresh one: drop it too
        trial.set_user_attr(ATTR_ERROR, f"surplus: the study reached its {target} trials before it was asked again")
        study.tell(trial, state=TrialState.PRUNED)
        n += 1
    return n


#: the study's user attribute holding the study file its first driver ran (JSON)
STUDY_ATTR = "vitsearch_study"
#: study-file fields that may differ between drivers of one study: where and with what each runs
_PER_DRIVER = {"output_dir": None, "search": ("workers", "cpus", "ray_address", "storage", "batch_size")}


def study_fingerprint(spec) -> dict:
    """The study file as every driver of one study must share it (per-driver resources left out), with what this
    driver resolves per device: ``device: auto`` written with the kind of device it found when that is not the
    CPU (``auto:cuda``: the latencies of one study come from one kind of device), and the precision choices the
    file leaves at their default as this driver searches them, in its base precision (``model.precision: auto``
    is bf16 on CUDA)."""
    doc = spec.model_dump(mode="json")
    doc.pop("output_dir", None)
    for key in _PER_DRIVER["search"]:
        doc["search"].pop(key, None)
    if spec.device == "auto" and (device := driver_device(spec)) != "cpu":
        doc["device"] = f"auto:{device.split(':')[0]}"  # a driver on the CPU fingerprints as before
    precision = spec.space.precision
    left = precision.defaulted()
    base = searched_base(spec) if left else "fp32"
    if base != "fp32":
        from vitsearch.spaces.knobs.precision import with_base

        searched = with_base(precision, base)
        doc["space"]["precision"].update({p: getattr(searched, p) for p in left})
    return doc


def driver_device(spec) -> str:
    """The device this driver runs the study on: ``device`` as written, ``auto`` as this machine resolves it (torch
    imported for ``auto`` only)."""
    if spec.device != "auto":
        return spec.device
    from vitsearch.evaluators.latency.fingerprint import resolve_device

    return str(resolve_device("auto"))


def searched_base(spec) -> str:
    """The base precision this driver's study resolves to (:func:`~vitsearch.search.preflight.study_base_precision`;
    the device probed only for ``device: auto``, torch imported only for a base that is not plainly fp32)."""
    if spec.model.precision == "fp32":
        return "fp32"
    from vitsearch.search.preflight import study_base_precision

    return study_base_precision(spec, driver_device(spec))


def check_same_study(storage, spec) -> None:
    """ConfigError when ``storage`` holds study ``spec.name`` started from a different study file, from the same
    one with ``device: auto`` resolved to another kind of device, or with other default precision choices (an
    older vitsearch that searched fp32 on a bf16 base)."""
    from vitsearch.search.results.rundir import default_hint, first_difference
    from vitsearch.spaces.errors import ConfigError

    try:
        stored = storage.get_study_user_attrs(storage.get_study_id_from_name(spec.name)).get(STUDY_ATTR)
    except KeyError:
        return  # a new study
    mine = study_fingerprint(spec)
    if stored is None or stored == mine:
        return
    precision = spec.space.precision
    left = set(precision.defaulted())  # what this driver's device may resolve otherwise than another's
    theirs, ours = stored.get("device"), mine["device"]
    if "auto" in str(theirs) and "auto" in ours and _kind(theirs) != _kind(ours) \
            and _apart(stored, left, "device") == _apart(mine, left, "device"):
        raise ConfigError(f"study {spec.name!r}: the storage holds this study run on {_where(theirs)} and this "
                          f"driver runs it on {_where(ours)} (device: auto): the latencies of one study come from one "
                          "kind of device; run every driver of one study on one kind of device")
    theirs, ours = stored.get("space", {}).get("precision", {}), mine["space"]["precision"]
    differing = {p for p in type(precision).model_fields if theirs.get(p) != ours.get(p)}
    if _apart(stored, left) == _apart(mine, left) and differing:
        part = sorted(differing)[0]
        raise ConfigError(f"study {spec.name!r}: the storage holds this study run with other precision choices "
                          f"(space.precision.{part}: {theirs.get(part)!r} vs {ours[part]!r}): this driver searches "
                          f"the default ones in its base precision {searched_base(spec)} (model.precision "
                          f"{spec.model.precision} on device {spec.device}); run every driver of one study on one "
                          "kind of device, or write space.precision")
    hint = default_hint(stored, mine, "the storage's study was run with", "to join it")
    raise ConfigError(f"study {spec.name!r}: the storage holds this study run with a different study file "
                      f"(first difference at {first_difference(stored, mine)}){hint}; give every driver of one study "
                      "the same file, or rename the study (name:)")


def _kind(device: str) -> str:
    """The kind of device a fingerprint's ``device: auto`` resolved to (plain ``auto``: the CPU)."""
    if device == "auto":
        return "cpu"
    return device.removeprefix("auto:")


def _where(device: str) -> str:
    return "the CPU" if _kind(device) == "cpu" else _kind(device)


def _apart(doc: dict, parts: set[str], *fields: str) -> dict:
    """A study fingerprint without the precision choices ``parts`` and the top-level ``fields``."""
    doc = {k: v for k, v in doc.items() if k not in fields}
    space = doc.get("space", {})
    precision = {k: v for k, v in space.get("precision", {}).items() if k not in parts}
    return {**doc, "space": {**space, "precision": precision}}


def record_study(study: optuna.Study, spec) -> None:
    """Store the study file on the Optuna study (first driver), for :func:`check_same_study`."""
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(STUDY_ATTR, study_fingerprint(spec))
