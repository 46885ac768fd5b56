"""The ``Evaluation`` record: every number of one candidate, and how it was obtained.

One record per evaluated candidate; JSON round trip through :meth:`Evaluation.to_dict`
/ :meth:`Evaluation.from_dict` (with a schema version). ``summary_lines`` is what
``vitsearch eval`` prints: each number says whether it was measured, predicted,
counted or computed, and on what.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vitsearch.spaces.errors import ConfigError

RECORD_SCHEMA_VERSION = 1
LATENCY_SOURCES = ("measured", "predicted")
LATENCY_KEYS = ("median_ms", "p10_ms", "p90_ms", "n_runs", "source", "device", "fingerprint_id")


#: Interval keys a latency entry carries beside LATENCY_KEYS (None where unknown): the ms
#: interval and its confidence, the ratio to the uncompressed reference, and which
#: reference time turned the ratio into ms.
INTERVAL_KEYS = ("low_ms", "high_ms", "confidence", "ratio", "ratio_low", "ratio_high", "basis",
                 "reference_ms_now", "reference_ms_profile", "protocol")


def latency_entry(result: Any = None, *, median_ms: float | None = None, device: str | None = None,
                  fingerprint_id: str | None = None, batch: int | None = None,
                  source: str = "predicted", interval: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``latency`` dict of an :class:`Evaluation`.

    From a :class:`~vitsearch.evaluators.latency.timing.results.LatencyResult` (``source`` measured,
    with its interval when measured interleaved), or from a predicted ``median_ms`` on
    ``device`` (p10/p90/n_runs are None then; ``interval`` holds :data:`INTERVAL_KEYS`).
    """
    if result is not None:
        out = {"median_ms": result.median_ms, "p10_ms": result.p10_ms, "p90_ms": result.p90_ms,
               "n_runs": result.n_runs, "source": result.source, "device": result.device,
               "fingerprint_id": result.fingerprint_id, "batch": result.batch}
        out.update({k: getattr(result, k, None) for k in INTERVAL_KEYS})
        out["stop_reason"] = result.stop_reason
        if getattr(result, "thread_info", None):
            from vitsearch.evaluators.latency.timing.hygiene import compact

            out["thread"] = compact(result.thread_info)
        return out
    out = {"median_ms": median_ms, "p10_ms": None, "p90_ms": None, "n_runs": None,
           "source": source, "device": device, "fingerprint_id": fingerprint_id, "batch": batch}
    out.update({k: (interval or {}).get(k) for k in INTERVAL_KEYS})
    return out


def interval_text(latency: dict[str, Any] | None) -> str:
    """``"1.234 ms [1.20, 1.27] measured"``: a latency with its interval and how it was obtained."""
    if not latency or latency.get("median_ms") is None:
        return "n/a"
    lo, hi, conf = latency.get("low_ms"), latency.get("high_ms"), latency.get("confidence")
    band = "" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]" + (f" ({round(100 * conf)} %)" if conf else "")
    return f"{latency['median_ms']:.3f} ms{band} {latency.get('source', 'measured')}"


@dataclass
class Evaluation:
    """Accuracy, latency, size and MACs of one compressed candidate.

    ``accuracy``/``top5`` are fractions in [0, 1]; ``latency`` holds :data:`LATENCY_KEYS`
    (plus ``batch``; build it with :func:`latency_entry`); ``phase_seconds`` maps a phase name
    (compress, recovery, accuracy, latency, ...) to its wall time in seconds.
    """

    config: dict[str, Any]
    accuracy: float
    accuracy_source: str
    size_mb: float
    size_mb_sparse_storage: float
    macs: int
    top5: float | None = None
    latency: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None
    recovery_steps: int = 0
    #: torch threads of the thread that distilled it (None: not recorded); a replay is exact at the same count
    recovery_threads: int | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    schema_version: int = RECORD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("accuracy", "top5"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(f"evaluation.{name}: {value!r} is not allowed; expected a fraction in [0, 1]")
        for name in ("size_mb", "size_mb_sparse_storage"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"evaluation.{name}: {value!r} is not allowed; expected a size >= 0 in MB")
        if isinstance(self.macs, bool) or not isinstance(self.macs, int) or self.macs < 0:
            raise ConfigError(f"evaluation.macs: {self.macs!r} is not allowed; expected an integer >= 0")
        if isinstance(self.recovery_steps, bool) or not isinstance(self.recovery_steps, int) or self.recovery_steps < 0:
            raise ConfigError(f"evaluation.recovery_steps: {self.recovery_steps!r} is not allowed; expected an integer >= 0")
        threads = self.recovery_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"evaluation.recovery_threads: {threads!r} is not allowed; expected an integer >= 1")
        if self.latency is not None:
            _check_latency(self.latency)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        """Inverse of :meth:`to_dict`; unknown keys and newer schema versions are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"evaluation: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"evaluation: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        version = data.get("schema_version", RECORD_SCHEMA_VERSION)
        if version != RECORD_SCHEMA_VERSION:
            raise ConfigError(f"evaluation.schema_version: {version!r} is not allowed; this vitsearch reads "
                              f"version {RECORD_SCHEMA_VERSION}")
        return cls(**data)

    def summary_lines(self) -> list[str]:
        """Human lines; every number says how it was obtained."""
        from vitsearch.spaces import CompressionConfig

        label = CompressionConfig.from_dict(self.config).summary()
        top5 = f", top-5 {self.top5:.2%}" if self.top5 is not None else ""
        lines = [
            f"config: {label}",
            f"accuracy: top-1 {self.accuracy:.2%}{top5} (measured on {self.accuracy_source})",
            _latency_line(self.latency, self.fingerprint),
            f"size: {self.size_mb:.3f} MB as stored (counted from the bytes of every stored tensor); "
            f"{self.size_mb_sparse_storage:.3f} MB with sparse weights in a sparse format (computed)",
            f"MACs: {self.macs / 1e6:.2f} M per image (analytic, from the config and the base model's dims)",
            "recovery: " + (f"{self.recovery_steps} distillation steps before scoring" if self.recovery_steps
                            else "none (scored straight after compression)"),
        ]
        if self.phase_seconds:
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in self.phase_seconds.items())
            lines.append(f"wall time (measured): {phases}, total {sum(self.phase_seconds.values()):.2f} s")
        return lines


def _check_latency(latency: dict[str, Any]) -> None:
    if not isinstance(latency, dict):
        raise ConfigError(f"evaluation.latency: {latency!r} is not allowed; expected an object with {', '.join(LATENCY_KEYS)}")
    missing = [k for k in LATENCY_KEYS if k not in latency]
    if missing:
        raise ConfigError(f"evaluation.latency: missing {', '.join(missing)}; expected {', '.join(LATENCY_KEYS)}")
    if latency["source"] not in LATENCY_SOURCES:
        raise ConfigError(f"evaluation.latency.source: {latency['source']!r} is not allowed; expected measured or predicted")


def _latency_line(latency: dict[str, Any] | None, fingerprint: dict[str, Any] | None) -> str:
    if latency is None:
        return "latency: not evaluated"
    fp = fingerprint or {}
    where = fp.get("cpu_model") or fp.get("gpu_name")
    threads = f", {fp['threads']} threads" if fp.get("kind") == "cpu" and fp.get("threads") else ""
    device = f"{latency['device']}" + (f" [{where}{threads}]" if where else "")
    ident = f", fingerprint {latency['fingerprint_id']}" if latency.get("fingerprint_id") else ""
    device += f", batch {latency['batch']}" if latency.get("batch") else ""
    if latency.get("runtime"):  # the runtime, and its one-off build time where it has one (not latency)
        device += (f", in {latency['runtime']} {latency.get('runtime_version', '')}"
                   + (f" (built in {latency['build_seconds']:.1f} s)" if (latency.get("build_seconds") or 0) >= 0.05
                      else ""))
    if latency["source"] == "measured" and latency.get("ratio") is not None:
        ref = latency["reference_ms_profile"] if latency.get("basis") == "reference in profile" \
            else latency["reference_ms_now"]
        ref_in = f" in {latency['reference_precision']}" if latency.get("reference_precision") else ""
        return (f"latency: {interval_text(latency)} = ratio {latency['ratio']:.3f} [{latency['ratio_low']:.3f}, "
                f"{latency['ratio_high']:.3f}] to the uncompressed model{ref_in} x {ref:.3f} ms ({latency['basis']}), "
                f"timed interleaved with it over {latency['n_runs']} passes each on {device}{ident}")
    if latency["source"] == "measured":
        return (f"latency: {latency['median_ms']:.3f} ms median (p10 {latency['p10_ms']:.3f}, p90 "
                f"{latency['p90_ms']:.3f}), measured over {latency['n_runs']} timed passes on {device}{ident}")
    return f"latency: {interval_text(latency)} by the latency predictor for {device}{ident}"
