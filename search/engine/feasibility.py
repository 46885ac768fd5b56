"""Hard constraints of a study, checked cheapest first.

Order: the predicted latency (driver, before any Tune trial, when a predictor is
fitted), then size and latency of the compressed model (worker, before any accuracy
work), then the accuracy drop (after accuracy). A candidate over a budget is recorded
infeasible through Optuna's constraints (value <= 0 means satisfied) and is never
accuracy-evaluated when a cost budget already rules it out.

A latency is settled over its budget only when it is over with high probability: the
low end of its interval (a prediction's 90 % interval, a measurement's 95 % bootstrap
interval of the interleaved ratio) must exceed the budget, never the point estimate
alone. The latency constraint told to Optuna is the same low end minus the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: accuracy told to Optuna for a candidate never accuracy-evaluated (infeasible on cost):
#: the worst possible, so samplers learn to avoid the region; tables show it as missing.
PLACEHOLDER_ACCURACY = 0.0


@dataclass(frozen=True)
class Infeasible:
    """Why a candidate is infeasible, the metrics known then, and its constraint values."""

    text: str
    metrics: dict[str, Any]
    constraints: list[float]


@dataclass
class Feasibility:
    """The study's budgets; ``min_accuracy`` is the base accuracy minus the allowed drop."""

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    min_accuracy: float | None = None
    predictor: Any = None
    predictor_fingerprint: str | None = field(default=None)

    def constraints(self, metrics: dict[str, Any]) -> list[float]:
        """Optuna constraint values (<= 0 satisfied), one per set budget, fixed order."""
        out = []
        if self.max_latency_ms is not None:
            out.append(latency_low(metrics) - self.max_latency_ms)
        if self.max_size_mb is not None:
            out.append(metrics["size_mb"] - self.max_size_mb)
        if self.min_accuracy is not None:
            acc = metrics.get("accuracy")
            out.append(self.min_accuracy - (PLACEHOLDER_ACCURACY if acc is None else acc))
        return out

    def constraint_names(self) -> list[str]:
        """Names of :meth:`constraints`' values, same order (Optuna's ``Trial.set_constraint`` keys)."""
        return [name for name, limit in (("latency_ms", self.max_latency_ms), ("size_mb", self.max_size_mb),
                                         ("accuracy", self.min_accuracy)) if limit is not None]

    def cost_violation(self, metrics: dict[str, Any]) -> str | None:
        """A latency or size budget the (measured or predicted) metrics exceed, as text."""
        low = latency_low(metrics)
        if self.max_latency_ms is not None and low is not None and low > self.max_latency_ms:
            return f"{_interval_text(metrics)} > budget {self.max_latency_ms:g} ms (over with high probability)"
        if self.max_size_mb is not None and metrics.get("size_mb", 0) > self.max_size_mb:
            return f"size {metrics['size_mb']:.3f} MB > budget {self.max_size_mb:g} MB"
        return None

    def accuracy_violation(self, metrics: dict[str, Any]) -> str | None:
        acc = metrics.get("accuracy")
        if self.min_accuracy is not None and acc is not None and acc < self.min_accuracy:
            return f"accuracy {acc:.4f} < minimum {self.min_accuracy:.4f} (base accuracy minus the allowed drop)"
        return None

    def precheck(self, config) -> Infeasible | None:
        """Driver-side check on the predicted latency (None without a predictor)."""
        if self.predictor is None or self.max_latency_ms is None:
            return None
        metrics = self.predicted(config)
        if metrics["latency"]["low_ms"] <= self.max_latency_ms:
            return None
        return Infeasible(f"{_interval_text(metrics)} > budget {self.max_latency_ms:g} ms: over with >= 95 % "
                          "probability (not compressed, not evaluated)", metrics,
                          self.constraints({**metrics, "size_mb": 0.0}))

    def predicted(self, config) -> dict[str, Any]:
        """What the predictor knows of ``config`` before anything is built: its metrics, accuracy unknown."""
        pred = self.predictor.predict(config)
        metrics = {"config": config.to_dict(), "accuracy": None,
                   "latency": {"median_ms": pred.median_ms, "source": "predicted", "uncertainty_ms": pred.uncertainty_ms,
                               "fingerprint_id": self.predictor_fingerprint, **pred.interval_entry()}}
        if getattr(self.predictor, "scale", 1.0) != 1.0:
            metrics["latency"]["calibration_factor"] = round(self.predictor.scale, 4)
        return metrics

    def values(self, metrics: dict[str, Any], objectives: list[tuple[str, str]]) -> list[float]:
        """Objective values for Optuna from an evaluation's metrics."""
        return [float(_metric(metrics, m)) for m, _ in objectives]

    def placeholder_values(self, metrics: dict[str, Any], objectives: list[tuple[str, str]]) -> list[float]:
        """Objective values for a candidate stopped before accuracy: known costs, worst accuracy."""
        out = []
        for metric, _ in objectives:
            value = PLACEHOLDER_ACCURACY if metric == "accuracy" else _metric(metrics, metric)
            out.append(float("inf") if value is None else float(value))
        return out


def _latency(metrics: dict[str, Any]) -> float | None:
    return (metrics.get("latency") or {}).get("median_ms")


def latency_low(metrics: dict[str, Any]) -> float | None:
    """Low end of the latency's interval (the point estimate where it has none)."""
    lat = metrics.get("latency") or {}
    return lat.get("low_ms") if lat.get("low_ms") is not None else lat.get("median_ms")


def _interval_text(metrics: dict[str, Any]) -> str:
    from vitsearch.evaluators.record import interval_text

    return "latency " + interval_text(metrics.get("latency"))


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    return _latency(metrics) if name == "latency_ms" else metrics.get(name)
