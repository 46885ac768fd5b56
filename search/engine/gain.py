"""No accuracy work on what cannot help: a candidate no cheaper than the uncompressed model.

A compressed candidate that is slower than the uncompressed model (and no smaller, no
lighter in MACs, where those are objectives) is no deployment improvement whatever its
accuracy: the uncompressed model is at least as accurate and at least as cheap. It is
settled after its cost check, without distillation or accuracy work.

**The run-start screen** (:func:`screen_precisions`): a precision that makes a part slower
than the uncompressed model on this device and runtime (torchao's dynamic int8 in eager at
batch 1 on a CPU: 2-3x slower) makes every candidate using it slower than the same
candidate with that part in the base precision, which is at least as accurate. Each
precision the space offers below the base (quantised; half precisions under fp32 on a
CPU) is timed alone on each part whose base precision is also a choice, interleaved
with the uncompressed model, once per run start; those whose ratio interval lies wholly
above 1 are screened, and a candidate using one is settled by the driver before any
measurement (PRUNED, ``settled`` "no gain", its no-gain margin the part's measured
slowdown). Latency-only studies without a fitted predictor (a predictor settles them on
predicted cost already).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vitsearch.run")

#: name of the Optuna constraint a settled no-gain candidate carries (> 0: how much slower, in ms)
NO_GAIN_CONSTRAINT = "no_gain_vs_uncompressed"


@dataclass(frozen=True)
class Reference:
    """The uncompressed model's costs, measured (or predicted) the way the candidates' are."""

    latency_ms: float
    size_mb: float
    macs: int
    latency_source: str
    cost_objectives: tuple[str, ...]  # the study's objectives other than accuracy
    #: the run-start screen, each precision timed alone on a part ({"part", "precision", "ratio", "ratio_low",
    #: "ratio_high", "latency_ms", "n_runs", "screened"}; plain, for the summary); "screened": slower
    screen: tuple[dict, ...] = ()

    def no_gain(self, metrics: dict[str, Any]) -> str | None:
        """Why ``metrics`` (a candidate's costs) are no improvement on the uncompressed model, or None."""
        config = metrics.get("config") or {}
        if not {k for k in config if k != "schema_version"} or not self.cost_objectives:
            return None  # the uncompressed model itself is the reference, never settled against itself
        lat = (metrics.get("latency") or {}).get("median_ms")
        worse = {
            "latency_ms": lat is not None and lat > self.latency_ms,
            "size_mb": metrics.get("size_mb", 0.0) >= self.size_mb,
            "macs": metrics.get("macs", 0) >= self.macs,
        }
        if not all(worse[m] for m in self.cost_objectives if m in worse):
            return None
        src = (metrics.get("latency") or {}).get("source", "measured")
        parts = [f"{src} latency {lat:.3f} ms > uncompressed {self.latency_ms:.3f} ms ({self.latency_source})"]
        if "size_mb" in self.cost_objectives:
            parts.append(f"size {metrics['size_mb']:.3f} MB >= {self.size_mb:.3f} MB")
        if "macs" in self.cost_objectives:
            parts.append(f"MACs {metrics['macs']:,} >= {self.macs:,}")
        return "no gain over the uncompressed model: " + ", ".join(parts) + " (not accuracy-evaluated)"

    def screened_out(self, config: Any) -> dict | None:
        """The screen entry ``config`` (a CompressionConfig) uses on some block, or None."""
        for entry in self.screen:
            if entry["screened"] and entry["precision"] in _part_values(config, entry["part"]):
                return entry
        return None

    def screen_text(self, entry: dict) -> str:
        """Why a candidate using ``entry``'s precision is settled, in words."""
        return (f"no gain over the same candidate with {entry['part']} in the base precision: {entry['part']} "
                f"{entry['precision']} alone runs x{entry['ratio']:.2f} [{entry['ratio_low']:.2f}, "
                f"{entry['ratio_high']:.2f}] the uncompressed model's latency (measured at run start, interleaved, "
                f"{entry['n_runs']} passes; not accuracy-evaluated)")

    def constraint(self, metrics: dict[str, Any]) -> float:
        """The Optuna constraint value of a settled no-gain candidate: ms slower than the reference (> 0)."""
        lat = (metrics.get("latency") or {}).get("median_ms")
        return max(float(lat - self.latency_ms), 1e-6) if lat is not None else 1.0


def _part_values(config: Any, part: str) -> set[str]:
    value = getattr(config.precision, part)
    return set(value) if isinstance(value, tuple) else {value}


def _below(base: str) -> tuple[str, ...]:
    """The precisions that lose information against ``base``: the quantised ones, and half precisions under fp32
    on a CPU (on CUDA a half precision also unlocks 2:4 kernels, so alone it says nothing of a 2:4 candidate)."""
    from vitsearch.spaces.budgets import QUANTISED_KINDS

    return QUANTISED_KINDS + (("fp16", "bf16") if base == "fp32" else ())


def screen_precisions(session, space) -> tuple[dict, ...]:
    """Each precision ``space`` offers below the base (:func:`_below`), timed alone on each part whose base
    precision is also a choice, interleaved with the uncompressed model (the study's protocol); ``screened``
    where its ratio interval lies wholly above 1. Half precisions are screened on a CPU only."""
    from dataclasses import replace

    base = session.reference_config
    below = _below(base.precision.base) if session.device.type == "cpu" else _below("")
    if space.mixed is not None:  # the budget's quantised precision, where a share keeps every group in the base
        offered = {part: [space.mixed.low] if 0.0 in space.mixed.shares else [] for part in ("attn", "mlp")}
    else:  # the part's choices below the base, where the base itself is a choice (the faster twin is in the space)
        dists = space.distributions()
        choices = {part: tuple(getattr(dists.get(f"precision.{part}"), "choices", ())) for part in ("attn", "mlp")}
        offered = {part: [v for v in c if v in below] if base.precision.base in c else [] for part, c in
                   choices.items()}
    out = []
    for part, values in offered.items():
        for value in values:
            config = replace(base, precision=replace(base.precision, **{part: value}))
            try:
                result = session.pipeline.measure_config(config)
            except Exception as exc:  # a precision that cannot build is the worker's to report, per candidate
                log.warning("screen: %s %s could not be timed alone (%s); not screened", part, value, exc)
                continue
            row = {"part": part, "precision": value, "ratio": result.ratio, "ratio_low": result.ratio_low,
                   "ratio_high": result.ratio_high, "latency_ms": result.median_ms, "n_runs": result.n_runs,
                   "screened": result.ratio_low is not None and result.ratio_low > 1.0}
            log.info("screen: %s %s alone: x%s [%s, %s] of the uncompressed model%s", part, value, *(
                "n/a" if row[k] is None else f"{row[k]:.3f}" for k in ("ratio", "ratio_low", "ratio_high")),
                ": screened" if row["screened"] else "")
            out.append(row)
    return tuple(out)


def reference_of(session, objectives: list[tuple[str, str]], predictor=None) -> Reference:
    """The uncompressed model's costs in this session (latency predicted when ``predictor`` is given)."""
    metrics = session.pipeline.costs(session.reference_config, predictor)
    lat = metrics["latency"]
    how = (f"predicted" if lat["source"] == "predicted" else
           f"measured at run start, {lat.get('n_runs')} passes")
    return Reference(lat["median_ms"], metrics["size_mb"], metrics["macs"], how,
                     tuple(m for m, _ in objectives if m != "accuracy"))
