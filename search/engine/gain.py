"""No accuracy work on what cannot help: a candidate no cheaper than the uncompressed model.

A compressed candidate that is slower than the uncompressed model (and no smaller, no
lighter in MACs, where those are objectives) is no deployment improvement whatever its
accuracy: the uncompressed model is at least as accurate and at least as cheap. It is
settled after its cost check, without distillation or accuracy work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def constraint(self, metrics: dict[str, Any]) -> float:
        """The Optuna constraint value of a settled no-gain candidate: ms slower than the reference (> 0)."""
        lat = (metrics.get("latency") or {}).get("median_ms")
        return max(float(lat - self.latency_ms), 1e-6) if lat is not None else 1.0


def reference_of(session, objectives: list[tuple[str, str]], predictor=None) -> Reference:
    """The uncompressed model's costs in this session (latency predicted when ``predictor`` is given)."""
    metrics = session.pipeline.costs(session.reference_config, predictor)
    lat = metrics["latency"]
    how = (f"predicted" if lat["source"] == "predicted" else
           f"measured at run start, {lat.get('n_runs')} passes")
    return Reference(lat["median_ms"], metrics["size_mb"], metrics["macs"], how,
                     tuple(m for m, _ in objectives if m != "accuracy"))
