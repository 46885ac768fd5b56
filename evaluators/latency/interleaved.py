"""Interleaved latency: a candidate timed against a reference in alternating chunks.

Why. On a shared or throttling machine one burst of passes measures the machine's mood
as much as the model: the same model's median moved 1.5x between bursts half a second
apart on the development VM, while the *ratio* of two models timed in alternating
chunks of 4 passes stayed within a few percent. Whatever slows the machine for a
while slows both sides of a chunk pair alike, so the ratio cancels it.

Protocol (:data:`PROTOCOL`): warm both up; then pairs of chunks - ``chunk`` passes of
the candidate and ``chunk`` of the reference, the order alternating pair by pair (ABBA,
so neither side always runs on a cache the other warmed) - each pair giving one
log-ratio log(median candidate pass / median reference pass). The estimate is the 25 %
trimmed mean of the log-ratios (the mean of the middle half: a burst that hit one side of
a pair does not move it; on the loaded development VM it spread less than the plain or
the 10 %-trimmed mean over repeated windows),
its 95 % interval a seeded percentile bootstrap over the pairs. Sampling stops when the
interval's half-width is within ``target_halfwidth`` of the ratio, at ``max_seconds``
of timed passes, or at ``max_pairs`` (never before ``min_pairs``); the result says which.

Very different costs (``chunk_ms``, off by default). A candidate at 9x the reference
(torchao int8 on an AVX2 CPU) spends 9x the wall time of a chunk pair on its own side,
so the two sides sample the machine's state unequally. With ``chunk_ms`` each side's
chunk fills the same wall time (``chunk_ms``, or ``chunk`` passes of the slower side):
the cheaper side runs more passes - in effect a reference ladder made of the reference
itself (k passes of it, k = 1 .. ``max_chunk``), whose rungs need no ratio of their own.
``settle`` untimed passes run after each switch of side (the first pass after the
other model is slower: its caches refilled). Measured (``benchmarks/protocol.py``, the
README's "Reference ladder"): 30-40 % less wall time, but int8 configs repeated less
often within +-5 % minutes apart (73 vs 87 %, 33 vs 67 % in two quiet runs), so both
stay off. A rung of the candidate's own kind (the uncompressed model in int8) made int8
configs repeat, but only by sharing that rung's one ratio, as variable between sittings
as what it removed: not used. What a ratio moves between sittings is put into the
interval instead (``sitting_sd``, :func:`widen`).

Absolute milliseconds are ``ratio x reference ms``: the reference's time in this very
measurement (``basis`` "reference now") or, given one, its time in the device profile
(``basis`` "reference in profile", the machine's typical state while profiling, so
numbers measured minutes or days apart compare). Both reference times are kept.

The candidate and the reference are modules (timed on an fp32 input of ``input_shape``)
or plain zero-argument callables (an ONNX Runtime session, a compiled model: whatever
runs one forward pass). The device lock is held throughout, the torch thread count is
fixed for the measurement and restored, and every thread's nice value, policy and
affinity is recorded (:mod:`.hygiene`). Python's garbage collector is run before the
timed passes and kept off during them, as ``timeit`` does. On CUDA each pass is bracketed
by CUDA events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from vitsearch.spaces.errors import ConfigError

PROTOCOL = "interleaved-v1"
TRIM = 0.25  # share of log-ratios trimmed at each end: the mean of the middle half


@dataclass(frozen=True)
class InterleavePlan:
    """How long to alternate: chunk size, stop rule, bootstrap. Validate with :meth:`checked`."""

    chunk: int = 4
    chunk_ms: float = 0.0
    max_chunk: int = 64
    settle: int = 0
    target_halfwidth: float = 0.03
    max_seconds: float = 3.0
    min_pairs: int = 6
    max_pairs: int = 400
    check_every: int = 2
    warmup: int = 3
    confidence: float = 0.95
    n_boot: int = 400
    seed: int = 0

    def checked(self) -> "InterleavePlan":
        """Self, or a ConfigError naming the first field out of range."""
        ints = {"chunk": (1, 64), "max_chunk": (1, 4096), "settle": (0, 64), "min_pairs": (3, 10_000),
                "max_pairs": (3, 100_000), "check_every": (1, 1000), "warmup": (0, 1000), "n_boot": (50, 100_000)}
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"latency.interleave.{name}: {v!r} is out of range; expected an integer in [{lo}, {hi}]")
        if self.max_pairs < self.min_pairs:
            raise ConfigError(f"latency.interleave.max_pairs: {self.max_pairs} is below min_pairs {self.min_pairs}")
        if self.max_chunk < self.chunk:
            raise ConfigError(f"latency.interleave.max_chunk: {self.max_chunk} is below chunk {self.chunk}")
        floats = {"chunk_ms": (0.0, 10_000.0), "target_halfwidth": (1e-4, 0.5), "max_seconds": (1e-3, 3600.0),
                  "confidence": (0.5, 0.999)}
        for name, (lo, hi) in floats.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"latency.interleave.{name}: {v!r} is out of range; expected a number in [{lo:g}, {hi:g}]")
        return self


@dataclass(frozen=True)
class InterleavedResult:
    """Candidate / reference ratio with its interval, the derived ms, and how it was measured."""

    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    ms: float
    ms_ci: tuple[float, float]
    basis: str                       # "reference now" | "reference in profile"
    reference_ms_now: float
    reference_ms_profile: float | None
    candidate_ms_now: float          # median of the candidate's own passes (drifts with the machine)
    candidate_p10_ms: float
    candidate_p90_ms: float
    passes: int                      # timed passes of the candidate (the reference got as many)
    chunks: int                      # chunk pairs
    chunk: int
    seconds: float                   # wall time of the timed pairs
    stop_reason: str                 # target | max_seconds | max_pairs
    target_halfwidth: float
    device: str
    threads: int | None
    thread_info: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""
    protocol: str = PROTOCOL
    within_low: float | None = None  # the bootstrap interval over this measurement's pairs alone (the stop rule's)
    within_high: float | None = None
    sitting_sd: float | None = None  # the machine's sitting-to-sitting spread of a ratio (log sd) the interval includes
    reference_chunk: int = 0         # timed passes of the reference per chunk (0: as many as the candidate)
    settle: int = 0                  # untimed passes run after each switch of side, before a chunk's timed ones
    samples: dict[str, list[float]] | None = None  # raw pass ms and log-ratios, with keep_samples

    @property
    def halfwidth(self) -> float:
        """Relative half-width of the ratio's interval."""
        return (self.ci_high - self.ci_low) / 2.0 / self.ratio

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["ms_ci"] = list(self.ms_ci)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InterleavedResult":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["ms_ci"] = tuple(data["ms_ci"])
        return cls(**data)

    def summary(self) -> str:
        """One line: ratio and interval, ms and its basis, passes, stop reason."""
        pct = round(100 * self.confidence)
        return (f"{self.ms:.3f} ms [{self.ms_ci[0]:.3f}, {self.ms_ci[1]:.3f}] = ratio {self.ratio:.3f} "
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}] ({pct} % interval{self._sitting()}) x "
                f"{self._ref_ms():.3f} ms "
                f"({self.basis}); measured interleaved with the reference, {self.chunks} chunk pairs of "
                f"{self._chunks()} ({self.passes} passes of the candidate, {self.seconds:.2f} s), stop: "
                f"{self.stop_reason}")

    def _sitting(self) -> str:
        own = "" if self.sitting_sd is None else f"; this sitting's [{self.within_low:.3f}, {self.within_high:.3f}]"
        return f", {sitting_text(self.sitting_sd)}{own}"

    def _chunks(self) -> str:
        ref = self.reference_chunk or self.chunk
        text = f"{self.chunk}" if ref == self.chunk else f"{self.chunk} candidate / {ref} reference passes"
        return text + (f", {self.settle} settling pass(es) after each switch" if self.settle else "")

    def _ref_ms(self) -> float:
        return self.reference_ms_profile if self.basis == "reference in profile" else self.reference_ms_now


def ratio_interval(log_ratios: Sequence[float], confidence: float = 0.95, n_boot: int = 400,
                   seed: int = 0) -> tuple[float, float, float]:
    """(ratio, low, high): 25 %-trimmed-mean log-ratio, percentile bootstrap over the pairs (seeded)."""
    x = np.asarray(log_ratios, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no chunk pairs")
    rng = np.random.default_rng(seed)
    boot = _trimmed_mean(x[rng.integers(0, x.size, size=(n_boot, x.size))])
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boot, [a, 1.0 - a])
    return float(np.exp(_trimmed_mean(x[None, :])[0])), float(np.exp(lo)), float(np.exp(hi))


def z_value(confidence: float) -> float:
    """The standard normal quantile of a two-sided ``confidence`` interval (1.96 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def sitting_text(sitting_sd: float | None) -> str:
    """What an interval holds, said beside it: the sitting's own noise, or that and the spread between sittings."""
    if sitting_sd is None:
        return "this sitting's alone: the spread between sittings not measured (no device profile)"
    return f"with the machine's sitting-to-sitting spread {100 * sitting_sd:.1f} % (device profile)"


def widen(ratio: float, low: float, high: float, sitting_sd: float | None, confidence: float) -> tuple[float, float]:
    """The interval of one sitting widened by the sitting-to-sitting spread (log sd), each side in quadrature.

    A ratio moves with the machine's state over minutes (two measurements of a config minutes
    apart differed by 3.2 % sd on the development VM while three protocols measuring it
    within seconds moved together), which no number of pairs in one sitting can see; an
    interval meant for the model's latency, not for this sitting's, carries that spread.
    """
    if not sitting_sd:
        return low, high
    z = z_value(confidence)
    lo = float(np.hypot(np.log(ratio / low), z * sitting_sd))
    hi = float(np.hypot(np.log(high / ratio), z * sitting_sd))
    return ratio * float(np.exp(-lo)), ratio * float(np.exp(hi))


def _trimmed_mean(rows: np.ndarray) -> np.ndarray:
    n = rows.shape[1]
    k = int(TRIM * n)
    s = np.sort(rows, axis=1)
    return s[:, k:n - k].mean(axis=1)


def measure_interleaved(candidate: Any, reference: Any, input_shape: Sequence[int] | None = None,
                        device: Any = "cpu", *, threads: int | None = None, plan: InterleavePlan | None = None,
                        reference_ms_profile: float | None = None, lock: bool = True,
                        lock_timeout: float | None = None, keep_samples: bool = False,
                        sitting_sd: float | None = None) -> InterleavedResult:
    """Time ``candidate`` against ``reference`` in alternating chunks; the ratio with its interval.

    ``candidate`` / ``reference``: an ``nn.Module`` (then ``input_shape`` (B, C, H, W) is
    required; the module is run in eval mode under ``inference_mode`` on an fp32 input,
    its modes restored afterwards) or a zero-argument callable running one forward pass.
    ``threads``: torch CPU threads during the measurement (default: the physical cores
    this process may use; ignored on CUDA). ``reference_ms_profile``: the reference's
    time in the device profile; when given, ``ms`` uses it (basis "reference in
    profile"), else the reference's time now. ``keep_samples`` keeps every raw pass time.
    ``sitting_sd``: the machine's sitting-to-sitting spread of a ratio (log sd, from the device
    profile, :func:`widen`); the interval includes it, ``within_low``/``within_high`` keep
    this sitting's alone.
    """
    import torch

    from vitsearch.evaluators.latency.devicelock import device_lock
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint, resolve_device
    from vitsearch.evaluators.latency.prepare import check_threads, default_threads

    plan = (plan or InterleavePlan()).checked()
    dev = resolve_device(device)
    threads = (default_threads() if threads is None else check_threads(threads)) if dev.type == "cpu" else None
    if reference_ms_profile is not None and not (isinstance(reference_ms_profile, (int, float))
                                                 and reference_ms_profile > 0):
        raise ConfigError(f"reference_ms_profile: {reference_ms_profile!r} is not a positive time in ms")
    if sitting_sd is not None and not (isinstance(sitting_sd, (int, float)) and 0.0 <= sitting_sd <= 0.5):
        raise ConfigError(f"sitting_sd: {sitting_sd!r} is not a spread in [0, 0.5] (log sd of a ratio)")
    saved = torch.get_num_threads()
    with device_lock(dev, timeout=lock_timeout) if lock else nullcontext(), _eval_modes(candidate, reference):
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            fns = [_as_callable(m, input_shape, dev) for m in (candidate, reference)]
            fingerprint = device_fingerprint(dev, threads if threads is not None else saved)
            with torch.inference_mode():
                res = _run(fns, plan, dev, threads, fingerprint, reference_ms_profile)
            lo, hi = widen(res.ratio, res.ci_low, res.ci_high, sitting_sd, plan.confidence)
            ref = res.ms / res.ratio
            res = replace(res, ci_low=lo, ci_high=hi, ms_ci=(lo * ref, hi * ref), sitting_sd=sitting_sd)
        finally:
            torch.set_num_threads(saved)
    return res if keep_samples else replace(res, samples=None)


def _run(fns, plan: InterleavePlan, dev, threads, fingerprint, reference_ms_profile) -> InterleavedResult:
    from vitsearch.evaluators.latency.hygiene import thread_report
    from vitsearch.evaluators.latency.prepare import warm_up
    from vitsearch.evaluators.latency.timing import gc_paused

    timers = [_pass_timer(fn, dev) for fn in fns]
    shape_hint = "(the model's input)"
    pass_ms = []
    for t in timers:
        first: list[float] = []
        warm_up(lambda t=t: first.extend(t(1)), 1, shape_hint)
        pass_ms.append(min(t(plan.warmup - 1) if plan.warmup > 1 else first))  # sizes the chunks
    sizes = chunk_sizes(plan, pass_ms)
    hygiene = thread_report()  # after warm-up: torch's pool threads exist now
    with gc_paused():  # no collection pauses a timed pass (timing.gc_paused says why)
        return _timed(timers, sizes, plan, dev, threads, fingerprint, reference_ms_profile, hygiene)


def chunk_sizes(plan: InterleavePlan, pass_ms: Sequence[float]) -> tuple[int, int]:
    """Timed passes per chunk of (candidate, reference).

    ``chunk`` each without ``chunk_ms``; with it, cost-balanced: each side fills the
    same wall time (``chunk_ms``, or ``chunk`` passes of the slower side if longer), so
    both sample the machine's state for as long - a candidate at 9x the reference does
    not face a reference that saw a ninth of its time.
    """
    if plan.chunk_ms <= 0:
        return plan.chunk, plan.chunk
    wall = max(plan.chunk_ms, plan.chunk * max(pass_ms))
    return tuple(min(max(plan.chunk, round(wall / max(ms, 1e-3))), plan.max_chunk) for ms in pass_ms)


def _timed(timers, sizes, plan: InterleavePlan, dev, threads, fingerprint, reference_ms_profile,
           hygiene) -> InterleavedResult:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    samples: list[list[float]] = [[], []]
    logs: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + plan.max_seconds
    reason, est = "max_pairs", None
    last = len(timers) - 1  # warmed up last
    while len(logs) < plan.max_pairs:
        order = (0, 1) if len(logs) % 2 == 0 else (1, 0)
        chunk = {}
        for i in order:
            if plan.settle and i != last:
                timers[i](plan.settle)  # the other side ran last: its caches refill before timed passes
            chunk[i] = timers[i](sizes[i])
            last = i
        for i in (0, 1):
            samples[i].extend(chunk[i])
        logs.append(float(np.log(np.median(chunk[0]) / np.median(chunk[1]))))
        n = len(logs)
        if n >= plan.min_pairs and n % plan.check_every == 0:
            est = ratio_interval(logs, plan.confidence, plan.n_boot, plan.seed)
            if (est[2] - est[1]) / 2.0 / est[0] <= plan.target_halfwidth:
                reason = "target"
                break
        if n >= plan.min_pairs and time.perf_counter() >= deadline:
            reason = "max_seconds"
            break
    seconds = time.perf_counter() - t0
    ratio, lo, hi = ratio_interval(logs, plan.confidence, plan.n_boot, plan.seed)
    ref_now = float(np.median(samples[1]))
    basis = "reference in profile" if reference_ms_profile else "reference now"
    ref = float(reference_ms_profile) if reference_ms_profile else ref_now
    cand = np.asarray(samples[0])
    if dev.type == "cuda":
        from vitsearch.evaluators.latency.fingerprint import nvml_info

        fingerprint = {**fingerprint, "after": nvml_info(dev.index, fingerprint.get("gpu_uuid"))}
    return InterleavedResult(
        ratio=ratio, ci_low=lo, ci_high=hi, confidence=plan.confidence, ms=ratio * ref, ms_ci=(lo * ref, hi * ref),
        within_low=lo, within_high=hi, basis=basis, reference_ms_now=ref_now,
        reference_ms_profile=reference_ms_profile,
        candidate_ms_now=float(np.median(cand)), candidate_p10_ms=float(np.percentile(cand, 10)),
        candidate_p90_ms=float(np.percentile(cand, 90)), passes=len(samples[0]), chunks=len(logs), chunk=sizes[0],
        seconds=seconds, stop_reason=reason, target_halfwidth=plan.target_halfwidth, device=str(dev),
        threads=threads, thread_info=hygiene, fingerprint=fingerprint, measured_at=started,
        reference_chunk=sizes[1], settle=plan.settle,
        samples={"candidate": samples[0], "reference": samples[1], "log_ratios": logs})


def _as_callable(m: Any, input_shape: Sequence[int] | None, dev) -> Callable[[], Any]:
    import torch
    from torch import nn

    from vitsearch.evaluators.latency.prepare import check_input_shape, on_device

    if isinstance(m, nn.Module):
        if input_shape is None:
            raise ConfigError("input_shape: required to time a module; give (batch, channels, height, width)")
        shape = check_input_shape(input_shape)
        model = on_device(m, dev)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
        return lambda: model(x)
    if not callable(m):
        raise ConfigError(f"latency: {type(m).__name__} is neither a torch module nor a callable; give the model "
                          "or a zero-argument function that runs one forward pass")
    return m


class _eval_modes:
    """Put modules in eval mode for the measurement and restore every submodule's mode."""

    def __init__(self, *objs: Any) -> None:
        from torch import nn

        self.modes = {sub: sub.training for o in objs if isinstance(o, nn.Module) for sub in o.modules()}

    def __enter__(self) -> "_eval_modes":
        for sub in self.modes:
            sub.training = False
        return self

    def __exit__(self, *exc: Any) -> None:
        for sub, mode in self.modes.items():
            sub.training = mode


def _pass_timer(fn: Callable[[], Any], dev) -> Callable[[int], list[float]]:
    """``timer(n)`` runs ``fn`` n times and returns each pass's milliseconds."""
    import torch

    if dev.type != "cuda":
        def cpu(n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                fn()
                out.append((time.perf_counter_ns() - t0) / 1e6)
            return out
        return cpu

    def cuda(n: int) -> list[float]:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        with torch.cuda.device(dev):
            torch.cuda.synchronize(dev)
            for start, end in events:
                start.record()
                fn()
                end.record()
            events[-1][1].synchronize()
        return [float(s.elapsed_time(e)) for s, e in events]
    return cuda
