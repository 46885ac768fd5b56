"""No accuracy work on what cannot help: a candidate no cheaper than the uncompressed model.

A compressed candidate that is slower than the uncompressed model (and no smaller, no
lighter in MACs, where those are objectives) is no deployment improvement whatever its
accuracy: the uncompressed model is at least as accurate and at least as cheap. It is
settled after its cost check, without distillation or accuracy work.

**The run-start screen** (:func:`screen_space`): a knob value that cannot make a part
cheaper on this device and runtime makes every candidate using it no better than the same
candidate without it, which is at least as accurate. At the study's first start, each such value
the space offers is timed alone on its part, interleaved with the uncompressed model, and
candidates using a screened one are settled by the driver before any measurement
(PRUNED, ``settled`` "no gain", its no-gain margin the part's measured slowdown):

* a precision below the base (quantised; half precisions under fp32 on a CPU), on a part
  whose base precision is also a choice, when its ratio interval lies wholly above 1
  (torchao's dynamic int8 in eager at batch 1 on a CPU: 2-3x slower);
* a sparsity with no sparse kernel on the device (2:4 and unstructured on a CPU; unstructured
  everywhere), on a part where dense is also a choice: its weights run masked and dense, so
  it costs accuracy and saves nothing; screened unless its interval lies wholly below 1.

Latency-only studies without a fitted predictor (a predictor settles them on predicted
cost already). The driver that creates the study keeps the verdicts on it (:data:`SCREEN_ATTR`,
with the machine's fingerprint): a resumed run and the other drivers of the study on that
machine use them, so a borderline value cannot be screened in one attempt and evaluated in
the next (:func:`stored_screen`, :func:`keep_screen`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vitsearch.run")

#: name of the Optuna constraint a settled no-gain candidate carries (> 0: how much slower, in ms)
NO_GAIN_CONSTRAINT = "no_gain_vs_uncompressed"
#: study user attribute holding the run-start screen's rows, as the study's first start timed them
SCREEN_ATTR = "vitsearch_screen"


@dataclass(frozen=True)
class Reference:
    """The uncompressed model's costs, measured (or predicted) the way the candidates' are."""

    latency_ms: float
    size_mb: float
    macs: int
    latency_source: str
    cost_objectives: tuple[str, ...]  # the study's objectives other than accuracy
    #: the run-start screen, each value timed alone on a part ({"knob", "part", "value", "ratio", "ratio_low",
    #: "ratio_high", "latency_ms", "n_runs", "device", "screened"}; plain, for the summary)
    screen: tuple[dict, ...] = ()
    #: fingerprint id of the machine and runtime the screen was timed on (:func:`screen_machine`)
    screen_machine: str | None = None
    #: the uncompressed model's latency as a ratio to the interleaved reference (the eager model): 1 in eager,
    #: as measured at run start in another runtime (ONNX Runtime's program: about 0.5); None when predicted
    latency_ratio: float | None = None

    def _relative(self, latency: dict) -> float | None:
        """A measured candidate's ratio to the uncompressed model: its ratio over the model's own, both timed
        interleaved with the same eager reference (drift of the machine cancels); None where either is missing."""
        ratio = latency.get("ratio")
        if ratio is None or self.latency_ratio is None or latency.get("source") != "measured":
            return None
        return ratio / self.latency_ratio

    def _slower(self, latency: dict) -> tuple[bool, str]:
        """Whether a candidate's ``latency`` entry is slower than the uncompressed model, and the finding in words:
        by :meth:`_relative`, else the ms against the run-start figure."""
        lat, relative = latency.get("median_ms"), self._relative(latency)
        if relative is not None:
            lo, hi = latency.get("ratio_low"), latency.get("ratio_high")
            base = self.latency_ratio
            interval = f" [{lo / base:.3f}, {hi / base:.3f}]" if None not in (lo, hi) else ""
            return relative > 1.0, (
                f"measured latency x{relative:.3f}{interval} of the uncompressed model (both timed "
                f"interleaved with the same reference, {latency.get('n_runs')} passes)")
        if lat is None:
            return False, ""
        return lat > self.latency_ms, (f"{latency.get('source', 'measured')} latency {lat:.3f} ms > uncompressed "
                                       f"{self.latency_ms:.3f} ms ({self.latency_source})")

    def no_gain(self, metrics: dict[str, Any]) -> str | None:
        """Why ``metrics`` (a candidate's costs) are no improvement on the uncompressed model, or None."""
        config = metrics.get("config") or {}
        if not {k for k in config if k != "schema_version"} or not self.cost_objectives:
            return None  # the uncompressed model itself is the reference, never settled against itself
        slower, finding = self._slower(metrics.get("latency") or {})
        worse = {
            "latency_ms": slower,
            "size_mb": metrics.get("size_mb", 0.0) >= self.size_mb,
            "macs": metrics.get("macs", 0) >= self.macs,
        }
        if not all(worse[m] for m in self.cost_objectives if m in worse):
            return None
        parts = [finding]
        if "size_mb" in self.cost_objectives:
            parts.append(f"size {metrics['size_mb']:.3f} MB >= {self.size_mb:.3f} MB")
        if "macs" in self.cost_objectives:
            parts.append(f"MACs {metrics['macs']:,} >= {self.macs:,}")
        return "no gain over the uncompressed model: " + ", ".join(parts) + " (not accuracy-evaluated)"

    def screened_out(self, config: Any) -> dict | None:
        """The screened row whose value ``config`` (a CompressionConfig) uses on its part on some block, or None."""
        for entry in self.screen:
            if entry["screened"] and entry["value"] in _part_values(config, entry["knob"], entry["part"]):
                return entry
        return None

    def screened(self, config: Any) -> tuple[str, dict, float] | None:
        """(why, metrics, no-gain margin in ms) of ``config`` settled by the screen, or None: nothing of it was
        measured; its margin is the screened part's own measured slowdown alone."""
        entry = self.screened_out(config)
        if entry is None:
            return None
        metrics = {"config": config.to_dict(), "accuracy": None,
                   "latency": {"median_ms": None, "source": "screened"}, "screened": entry}
        return self.screen_text(entry), metrics, max((entry["ratio"] - 1.0) * self.latency_ms, 1e-6)

    @staticmethod
    def screen_finding(entry: dict) -> str:
        """What the screen found of ``entry``, e.g. ``attn int8 alone runs x1.98 [1.93, 2.04] the uncompressed
        model's latency on cpu``."""
        timed = (f"x{entry['ratio']:.2f} [{entry['ratio_low']:.2f}, {entry['ratio_high']:.2f}] the uncompressed "
                 f"model's latency on {entry['device']}")
        if entry["knob"] == "sparsity":
            return (f"{entry['part']} {entry['value']} runs as masked dense weights on {entry['device']} (no sparse "
                    f"kernel there); alone it runs {timed}")
        return f"{entry['part']} {entry['value']} alone runs {timed}"

    def screen_text(self, entry: dict) -> str:
        """Why a candidate using ``entry``'s value is settled, in words."""
        twin = "dense" if entry["knob"] == "sparsity" else "in the base precision"
        return (f"no gain over the same candidate with {entry['part']} {twin}: {self.screen_finding(entry)} "
                f"(measured at the study's first start, interleaved, {entry['n_runs']} passes; not accuracy-evaluated)")

    def constraint(self, metrics: dict[str, Any]) -> float:
        """The Optuna constraint value of a settled no-gain candidate: ms slower than the reference (> 0); by the
        two ratios where both were measured (as :meth:`no_gain` judges)."""
        latency = metrics.get("latency") or {}
        lat, relative = latency.get("median_ms"), self._relative(latency)
        if relative is not None:
            return max(float((relative - 1.0) * self.latency_ms), 1e-6)
        return max(float(lat - self.latency_ms), 1e-6) if lat is not None else 1.0


def _part_values(config: Any, knob: str, part: str) -> set[str]:
    """The values ``config`` gives ``part`` under ``knob`` on any block."""
    if knob == "sparsity":
        return {getattr(config.sparsity, part)}
    return {v for name, v in config.precision.named_values(base=False) if name.startswith(f"precision.{part}")}


def _below(base: str) -> tuple[str, ...]:
    """The precisions that lose information against ``base``: the quantised ones, and half precisions under fp32
    on a CPU (on CUDA a half precision also unlocks 2:4 kernels, so alone it says nothing of a 2:4 candidate)."""
    from vitsearch.spaces.budgets import QUANTISED_KINDS

    return QUANTISED_KINDS + (("fp16", "bf16") if base == "fp32" else ())


def _offered(session, space) -> list[tuple[str, str, str, bool]]:
    """(knob, part, value, masked) the screen times: see the module's docstring. ``masked``: a sparsity with no
    sparse kernel on this device (its weights run masked dense)."""
    from vitsearch.spaces.knobs.sparsity import HALF, parse_sparsity, sparse_kernel_for

    base, device = session.reference_config.precision.base, str(session.device)
    dists = space.distributions()
    choices = {key: tuple(getattr(dists.get(key), "choices", ())) for key in
               (f"{knob}.{part}" for knob in ("precision", "sparsity") for part in ("attn", "mlp"))}
    out = []
    for part in ("attn", "mlp"):
        if space.mixed is not None:  # the budget's quantised precision, where a share keeps every group in the base
            out += [("precision", part, space.mixed.low, False)] if 0.0 in space.mixed.shares else []
        elif base in (prec := choices[f"precision.{part}"]):  # the faster twin (the base) is in the space
            below = _below(base) if session.device.type == "cpu" else _below("")
            out += [("precision", part, v, False) for v in prec if v in below]
        if "dense" in (sparse := choices[f"sparsity.{part}"]):
            # no kernel on this device (the weights run masked), or one at the base precision (a half on CUDA)
            masked = {v: not sparse_kernel_for(v, device) for v in sparse
                      if parse_sparsity(part, v)[0] in ("2:4", "unstructured")}
            out += [("sparsity", part, v, m) for v, m in masked.items() if m or base in HALF]
    return out


def screen_space(session, space, base_ratio: float = 1.0) -> tuple[dict, ...]:
    """Each value :func:`_offered` names, timed alone on its part, interleaved with the eager reference (the
    study's protocol); its ratio and interval divided by ``base_ratio`` (:attr:`Reference.latency_ratio`: the
    uncompressed model's own in the study's runtime), so they are to the uncompressed model in that runtime;
    ``screened`` as the module's docstring says."""
    from dataclasses import replace

    base, out = session.reference_config, []
    for knob, part, value, masked in _offered(session, space):
        config = replace(base, **{knob: replace(getattr(base, knob), **{part: value})})
        try:
            result = session.pipeline.measure_config(config)
        except Exception as exc:  # a value that cannot build is the worker's to report, per candidate
            log.warning("screen: %s %s could not be timed alone (%s); not screened", part, value, exc)
            continue
        ratio, low, high = (None if r is None else r / base_ratio for r in
                            (result.ratio, result.ratio_low, result.ratio_high))
        if masked:
            screened = not (high is not None and high < 1.0)  # masked dense: not faster, unless shown otherwise
        else:
            screened = low is not None and low > 1.0
        row = {"knob": knob, "part": part, "value": getattr(getattr(config, knob), part), "ratio": ratio,
               "ratio_low": low, "ratio_high": high, "latency_ms": result.median_ms, "n_runs": result.n_runs,
               "device": str(session.device), "screened": screened}
        log.info("screen: %s %s alone: x%s [%s, %s] of the uncompressed model%s", part, value, *(
            "n/a" if row[k] is None else f"{row[k]:.3f}" for k in ("ratio", "ratio_low", "ratio_high")),
            ": screened" if screened else "")
        out.append(row)
    return tuple(out)


def reference_of(session, objectives: list[tuple[str, str]], predictor=None) -> Reference:
    """The uncompressed model's costs in this session (latency predicted when ``predictor`` is given)."""
    metrics = session.pipeline.costs(session.reference_config, predictor)
    lat = metrics["latency"]
    how = ("predicted" if lat["source"] == "predicted" else
           f"measured at run start, {lat.get('n_runs')} passes")
    ratio = session.pipeline.uncompressed_ratio(lat.get("ratio")) if lat["source"] == "measured" else None
    return Reference(lat["median_ms"], metrics["size_mb"], metrics["macs"], how,
                     tuple(m for m, _ in objectives if m != "accuracy"), latency_ratio=ratio)


def screen_machine(session) -> str:
    """The fingerprint id of the machine and runtime a screen's verdicts hold for (another CPU or GPU, another
    verdict)."""
    from vitsearch.evaluators.latency.fingerprint import fingerprint_id
    from vitsearch.evaluators.runtimes.deploy import runtime_fingerprint

    lat = session.spec.latency
    return fingerprint_id(runtime_fingerprint(session.device, lat.threads, lat.runtime))


def stored_screen(plan, machine: str) -> tuple[dict, ...] | None:
    """The screen rows the study's first start kept on it, when timed on ``machine`` (resume, or a storage other
    drivers share); None for a new study (a fresh run's storage is not opened, so nothing is written before
    validation), one without rows, or rows of another machine."""
    from vitsearch.search.storage import open_storage

    if not plan.resume and plan.storage_url == plan.run_dir.default_storage_url():
        return None
    storage = open_storage(plan.storage_url)
    try:
        kept = storage.get_study_user_attrs(storage.get_study_id_from_name(plan.spec.name)).get(SCREEN_ATTR)
    except KeyError:
        return None  # no such study yet
    return tuple(kept["rows"]) if kept and kept.get("machine") == machine else None


def keep_screen(study, reference: Reference, created: bool) -> Reference:
    """The screen in force for this driver: the study's kept rows when they were timed on this machine, else this
    start's, which the driver that created the study keeps on it (only that one writes: of drivers that start
    together, the others use their own rows for this attempt). A start that does not screen keeps nothing."""
    from dataclasses import replace

    if not reference.screen:
        return reference
    kept = study.user_attrs.get(SCREEN_ATTR)
    if kept and kept.get("machine") == reference.screen_machine:
        rows = tuple(kept["rows"])
        if rows != reference.screen:
            log.info("screen: the study's kept verdicts are used (%d rows), not this start's", len(rows))
        return replace(reference, screen=rows)
    if created:
        study.set_user_attr(SCREEN_ATTR, {"machine": reference.screen_machine, "rows": list(reference.screen)})
    return reference
