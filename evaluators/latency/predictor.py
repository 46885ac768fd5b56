"""LatencyPredictor: per-component latency tables summed, then a calibrated correction.

Why this shape. A compressed ViT's latency is mostly the sum of its parts (stem,
attention and MLP per block, token-reduction steps), each measured on the target device
over the shapes the space can produce (:mod:`.profile`). But at batch 1 on a CPU the sum
of parts timed alone is far from the whole: per-op dispatch overhead, residual adds and
norms that no part contains, weights that sit in cache when one block is timed in a loop
and do not when twelve blocks take turns, and int8 dynamic quantization whose cost per
call does not scale like its matmuls. So the predictor fits, on whole-model measurements
of sampled configs, a *calibrated additive model*:

    latency = sum_g  a_g * (sum of component ms in group g)  +  sum_k  b_k * count_k  +  c

with one factor ``a_g`` per component group (stem, attention and MLP per precision,
reduction steps) - the cache / fusion correction, multiplicative and per format - and
one per-op overhead ``b_k`` per structural count (blocks, token-reducing blocks, blocks
attending under a token-size mask, GQA blocks). It is fitted on relative error (every
config counts alike, fast or slow) by ridge regression shrunk towards the plain sum
(a = 1, b = c = 0): with few whole-model samples it degrades to the sum of parts rather
than to nonsense, with many the data win. A tree ensemble was the alternative; a linear
model in these physically meaningful terms extrapolates sanely, needs 10x fewer
samples, and predicts in microseconds with nothing but a dot product. A bootstrap
ensemble of the same fit gives the uncertainty (plus the residual noise of the fit).

A second stage (:mod:`.residual`, from 40 whole-model samples on) multiplies by
``exp(trees(config))``: boosted trees on the log-ratio measured / first stage, for the
interactions a sum cannot express.

What is predicted: the ratio of the config's latency to the uncompressed model's, as
the interleaved protocol (:mod:`.interleaved`) measures it, in ms units: the fit's
whole-model targets are the measured ratios times ``state["reference_ms"]`` (the
reference's median time over the profile), so ``Prediction.ratio`` = ms / reference_ms
and ``Prediction.median_ms`` (the name the search engine reads) = ratio x reference_ms.
A profile measured with the old protocol (format 1) is refused with a hint to re-profile.
A profile in another runtime than eager times whole models only: its predictor (``state
["kind"]`` "whole-model") has no component tables, and its first stage's features come
from the config alone (:mod:`.wholemodel`).

Plain data only (dicts, lists, floats): the object pickles for Ray and saves as JSON.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.knobs.tokens import tokens_per_block

from vitsearch.evaluators.latency.components import Dims, attn_key, hidden_for, mlp_key
from vitsearch.evaluators.latency.residual import CompiledTrees, config_features

PREDICTOR_FILE = "predictor.json"
#: 2: fitted on interleaved ratios to the uncompressed model (:data:`.interleaved.PROTOCOL`).
FORMAT_VERSION = 2
#: z of the two-sided 90 % normal interval: a latency is "over budget" only when the
#: interval's low end is (over with >= 95 % probability), "within" only when its high end is.
Z90 = 1.6448536
COUNT_FEATURES = ("n_blocks", "n_token_blocks", "n_masked_blocks", "n_gqa_blocks", "const")


def is_count(column: str) -> bool:
    """Structural-count columns (prior coefficient 0) as opposed to component-ms sums (prior 1)."""
    return column in COUNT_FEATURES or column.startswith(("nb_", "tok_"))


@dataclass(frozen=True)
class Prediction:
    """A predicted latency (ms) with its uncertainty (one standard deviation, ms).

    ``median_ms`` = predicted ratio to the uncompressed model x ``reference_ms`` (the
    reference's time in the profile, times the calibration factor where calibrated).
    """

    median_ms: float
    uncertainty_ms: float
    out_of_range: bool = False
    reason: str | None = None
    reference_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        """Predicted candidate / uncompressed-model latency ratio."""
        return self.median_ms / self.reference_ms if self.reference_ms else None

    @property
    def low_ms(self) -> float:
        """Low end of the 90 % interval (ms)."""
        return max(0.0, self.median_ms - Z90 * self.uncertainty_ms)

    @property
    def high_ms(self) -> float:
        """High end of the 90 % interval (ms)."""
        return self.median_ms + Z90 * self.uncertainty_ms

    def interval_entry(self) -> dict[str, Any]:
        """The interval keys of a latency entry (:data:`vitsearch.evaluators.record.INTERVAL_KEYS`)."""
        r = self.ratio
        return {"low_ms": self.low_ms, "high_ms": self.high_ms, "confidence": 0.9, "ratio": r,
                "ratio_low": None if r is None else self.low_ms / self.reference_ms,
                "ratio_high": None if r is None else self.high_ms / self.reference_ms,
                "basis": "reference in profile", "reference_ms_now": None, "reference_ms_profile": self.reference_ms,
                "protocol": "predicted from interleaved ratios"}


def default_profile_dir(spec: Any) -> Path:
    """Where ``vitsearch profile`` writes for a study: ``profiles/<study name>`` (relative to cwd).

    ``profiles/<study name>-<runtime>`` for a runtime other than eager, so one study's
    profiles in two runtimes sit side by side. The predictor inside is tied to the
    study's batch and input size; ``load_for_study`` refuses one fitted for another shape.
    """
    runtime = spec.latency.runtime
    return Path("profiles") / (str(spec.name) if runtime == "eager" else f"{spec.name}-{runtime}")


class Table:
    """One component key: measured ms at token-count anchors, linearly interpolated."""

    __slots__ = ("tokens", "ms")

    def __init__(self, tokens: list[int], ms: list[float]) -> None:
        self.tokens, self.ms = list(tokens), list(ms)

    def at(self, n: int) -> tuple[float, bool]:
        """(ms at ``n`` tokens, inside the measured range)."""
        t, m = self.tokens, self.ms
        if len(t) == 1 or n <= t[0]:
            return m[0] * (n / t[0] if n < t[0] and t[0] else 1.0), n >= t[0]
        if n >= t[-1]:
            if n == t[-1] or len(t) < 2:
                return m[-1], n == t[-1]
            slope = (m[-1] - m[-2]) / (t[-1] - t[-2])
            return m[-1] + slope * (n - t[-1]), False
        i = bisect_left(t, n)
        if t[i] == n:
            return m[i], True
        w = (n - t[i - 1]) / (t[i] - t[i - 1])
        return m[i - 1] + w * (m[i] - m[i - 1]), True


class LatencyPredictor:
    """Predicts whole-model latency of a CompressionConfig on the device it was profiled on.

    Built by :func:`fit` from a profile table; saved and loaded as JSON. Picklable (Ray),
    deterministic and side-effect free; ``predict`` takes microseconds.
    """

    def __init__(self, state: dict) -> None:
        self.state = state
        self.dims = Dims(**state["dims"])
        self.whole = state.get("kind") == "whole-model"  # a runtime profile: no component tables
        tables = state.get("tables") or {}
        self.tables = {part: {k: Table(**v) for k, v in tables.get(part, {}).items()}
                       for part in ("attn", "mlp", "reduce")}
        self.stem_ms = float(tables.get("stem", 0.0))
        self.columns: list[str] = list(state["columns"])
        self.coef: list[float] = list(state["coef"])
        self.boot: list[list[float]] = [list(b) for b in state["boot"]]
        self.sigma_rel = float(state["sigma_rel"])
        self._col = {c: i for i, c in enumerate(self.columns)}
        self.residual = state.get("residual")
        self._trees = CompiledTrees(self.residual) if self.residual else None
        self.vocab = state.get("vocab") or {"precision": [], "sparsity": [], "method": []}
        ref = state.get("reference_ms")
        self._floor = 0.05 * self.stem_ms if self.stem_ms > 0 else (0.02 * float(ref) if ref else 1e-6)
        self.scale = float((state.get("calibration") or {}).get("factor", 1.0))

    # ---- calibration ------------------------------------------------------------------
    def calibrated(self, reference_ms_now: float, how: str = "") -> "LatencyPredictor":
        """A copy whose predictions follow the device's current speed.

        The fit targets the machine in its quietest state seen while profiling (the
        reference model's time ``state["reference_ms"]``). Timing that same reference now
        and scaling every prediction by now / quiet carries the profile over to a device
        that has since slowed down or sped up (thermal state, a co-tenant, a governor) -
        one measurement instead of a new profile. ``how`` says how it was timed.
        """
        quiet = self.state.get("reference_ms")
        if not quiet or not reference_ms_now or reference_ms_now <= 0:
            raise ConfigError("latency predictor: cannot calibrate, the profile has no reference timing "
                              "(re-run `vitsearch profile`)")
        state = dict(self.state)
        state["calibration"] = {"factor": float(reference_ms_now) / float(quiet), "reference_ms_now":
                                float(reference_ms_now), "reference_ms_profile": float(quiet), "how": how}
        return type(self)(state)

    # ---- identity -------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict:
        """The fingerprint of the device the profile was measured on."""
        return dict(self.state["fingerprint"])

    @property
    def fingerprint_id(self) -> str:
        """Short id of :attr:`fingerprint`."""
        return str(self.state["fingerprint"]["fingerprint_id"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(batch, C, H, W) the profile was measured at."""
        return tuple(self.state["input_shape"])

    @property
    def trained_keys(self) -> set[str]:
        """Config JSON keys of the whole-model measurements used in fitting."""
        return set(self.state.get("trained_keys", []))

    def check_device(self, fingerprint: dict) -> None:
        """DeviceError (one line) unless ``fingerprint`` is the device (and runtime) this was fitted on."""
        if fingerprint.get("fingerprint_id") != self.fingerprint_id:
            from vitsearch.evaluators.latency.fingerprint import mismatch_text

            raise DeviceError(f"latency predictor: {mismatch_text(self.fingerprint, fingerprint)}")

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """ConfigError unless ``shape`` is the (batch, C, H, W) the profile was measured at."""
        if tuple(shape) != self.input_shape:
            raise ConfigError(f"latency predictor: fitted for input {self.input_shape}, but the study measures "
                              f"{tuple(shape)}; run `vitsearch profile` for this batch / input size")

    # ---- prediction -----------------------------------------------------------------
    def features(self, config: Any) -> tuple[list[float], list[str]]:
        """The correction model's feature row for ``config``, and why it is out of range."""
        if self.whole:
            from vitsearch.evaluators.latency.wholemodel import feature_row

            return feature_row(config, self.dims, self._col)
        d, why = self.dims, []
        h = config.heads.keep or d.num_heads
        kv = config.heads.kv_heads or h
        pa, pm = config.precision.attn, config.precision.mlp
        at = self._table("attn", attn_key(h, kv, pa, config.sparsity.attn), why)
        mt = self._table("mlp", mlp_key(hidden_for(d, config.sparsity.mlp), pm, config.sparsity.mlp), why)
        per = tokens_per_block(config, d.num_patches, d.num_prefix_tokens, d.depth)
        method = config.tokens.method
        rt = self.tables["reduce"].get(method)
        reducing = any(s < 1.0 for _, s in config.tokens.schedule)
        masked = n_masked = 0
        attn_ms = mlp_ms = red_ms = 0.0
        for n_a, n_m in per:
            attn_ms += self._at(at, n_a, "attention", why)
            mlp_ms += self._at(mt, n_m, "MLP", why)
            n_masked += masked
            if n_m != n_a:
                if rt is None:
                    why.append(f"token {method} not profiled")
                else:
                    red_ms += self._at(rt, n_a, f"token {method} from", why)
                masked = masked or method == "merge"
        nb, col = len(per), self._col
        a_col = f"attn_{pa}" if f"attn_{pa}" in col else "attn_other"
        m_col = f"mlp_{pm}" if f"mlp_{pm}" in col else "mlp_other"
        f = {"stem": self.stem_ms, a_col: attn_ms, m_col: mlp_ms, "reduce": red_ms, "n_blocks": nb,
             "n_token_blocks": nb if reducing else 0, "n_masked_blocks": n_masked,
             "n_gqa_blocks": nb if kv != h else 0, "const": 1.0,
             # per-format call overhead beyond the factor, and its interplay with token blocks
             f"nb_{a_col}": nb, f"nb_{m_col}": nb, f"tok_{a_col}": nb if reducing else 0,
             f"tok_{m_col}": nb if reducing else 0}
        return [float(f.get(c, 0.0)) for c in self.columns], why

    @staticmethod
    def _at(table: Table, n: int, what: str, why: list[str]) -> float:
        v, ok = table.at(n)
        if not ok:
            why.append(f"{what} {n} tokens (profiled {table.tokens[0]}..{table.tokens[-1]})")
        return v

    def _table(self, part: str, key: str, why: list[str]) -> Table:
        table = self.tables[part].get(key)
        if table is not None:
            return table
        # Not profiled (another precision / width than the space held): the closest
        # profiled key stands in, and the prediction says it is out of range.
        why.append(f"{part} {key} not profiled")
        return min(self.tables[part].items(), key=lambda kv_: _key_distance(key, kv_[0]))[1]

    def predict(self, config: Any) -> Prediction:
        """Predicted latency of ``config`` (a CompressionConfig) on the profiled device and shape."""
        row, why = self.features(config)
        mean = max(_dot(self.coef, row), self._floor)
        factor = math.exp(self.second_stage(config, mean)) * self.scale
        boot = [max(_dot(b, row), self._floor) * factor for b in self.boot]
        return self._prediction(mean * factor, boot, why)

    def second_stage(self, config: Any, first_ms: float) -> float:
        """Log-ratio the residual trees (:mod:`.residual`) add to the first stage (0 without trees)."""
        if self._trees is None:
            return 0.0
        return self._trees(config_features(config, self.dims, self.vocab, first_ms))

    def predict_many(self, configs: list[Any]) -> list[Prediction]:
        """:meth:`predict` for each config."""
        return [self.predict(c) for c in configs]

    def _prediction(self, mean: float, boot: list[float], why: list[str]) -> Prediction:
        if boot:
            mu = sum(boot) / len(boot)
            var = sum((b - mu) ** 2 for b in boot) / max(1, len(boot) - 1)
        else:
            var = 0.0
        unc = math.sqrt(var + (self.sigma_rel * mean) ** 2)
        reason = "; ".join(dict.fromkeys(why)) if why else None
        ref = self.state.get("reference_ms")
        return Prediction(float(mean), float(unc), bool(why), reason, float(ref) * self.scale if ref else None)

    def model_uncertainty(self, config: Any) -> float:
        """Relative bootstrap spread only (how unsure the fit is, not the noise): for refinement."""
        row, why = self.features(config)
        boot = [_dot(b, row) for b in self.boot]
        mean = max(_dot(self.coef, row), 1e-9)
        mu = sum(boot) / max(1, len(boot))
        sd = math.sqrt(sum((b - mu) ** 2 for b in boot) / max(1, len(boot) - 1)) if boot else 0.0
        return sd / mean + (1.0 if why else 0.0)

    def sum_of_parts(self, config: Any) -> float:
        """The uncorrected sum of component latencies (ms), for diagnostics."""
        row, _ = self.features(config)
        return sum(v for c, v in zip(self.columns, row) if not is_count(c))

    # ---- persistence ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write as JSON (``path`` is a file or a profile dir); atomic."""
        p = Path(path)
        if p.is_dir() or not p.suffix:
            p.mkdir(parents=True, exist_ok=True)
            p = p / PREDICTOR_FILE
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        """Load from a profile dir or a predictor file; ConfigError with one line if absent or wrong."""
        p = Path(path)
        if p.is_dir():
            p = p / PREDICTOR_FILE
        if not p.is_file():
            raise ConfigError(f"latency predictor: {str(p)!r} does not exist; run `vitsearch profile STUDY` "
                              "first (it writes profiles/<study name>/predictor.json)")
        try:
            state = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"latency predictor: {str(p)!r} is not valid JSON ({exc.msg}); re-run "
                              "`vitsearch profile`") from None
        if isinstance(state, dict) and state.get("format_version") == 1:
            raise ConfigError(f"latency predictor: {str(p)!r} was measured with the old latency protocol (one "
                              "burst per model); re-profile with `vitsearch profile STUDY --out NEW_DIR` (or "
                              "delete the profile dir) to measure interleaved ratios")
        if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"latency predictor: {str(p)!r} has format {state.get('format_version')!r}, this "
                              f"vitsearch reads {FORMAT_VERSION}; re-run `vitsearch profile`")
        return cls(state)

    def __getstate__(self) -> dict:
        return self.state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state)

    def __repr__(self) -> str:
        return (f"LatencyPredictor(fingerprint {self.fingerprint_id}, input {self.input_shape}, "
                f"{self.state.get('n_models')} whole-model samples)")


def load_for_study(spec: Any, input_shape: tuple[int, ...], path: str | Path | None = None) -> LatencyPredictor:
    """The study's fitted predictor (``default_profile_dir`` unless ``path``), checked against the shape."""
    pred = LatencyPredictor.load(path or default_profile_dir(spec))
    pred.check_input_shape(tuple(input_shape))
    return pred


def profile_basis(spec: Any, device: Any, threads: int | None, fingerprint_of: Any = None) -> dict:
    """``{"reference_ms", "sitting_sd"}`` of the study's profile if one matches this device (else both None).

    Measured latencies use ``reference_ms`` (the uncompressed model's time in the profile)
    as their ms basis (ratio x this), so they compare with each other and with predictions
    whenever they were taken; without a matching profile they use the reference timed in
    the measurement itself. ``sitting_sd``: the ratio's sitting-to-sitting spread the
    profile measured on this machine, which their intervals include
    (:func:`.interleaved.widen`). ``fingerprint_of(device, threads)``: the fingerprint the
    profile must carry (default: the device's, i.e. eager).
    """
    state = _matching_state(spec, device, threads, fingerprint_of)
    if state is None:
        return {"reference_ms": None, "sitting_sd": None}
    sd = state.get("sitting_sd")
    return {"reference_ms": float(state["reference_ms"]), "sitting_sd": None if sd is None else float(sd)}


def _matching_state(spec: Any, device: Any, threads: int | None, fingerprint_of: Any) -> dict | None:
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint
    from vitsearch.evaluators.latency.measure import default_threads

    mode = spec.latency.predictor
    p = default_profile_dir(spec) if mode in ("auto", "off") else Path(mode)
    p = p / PREDICTOR_FILE if p.is_dir() else p
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or not state.get("reference_ms"):
        return None
    if list(state.get("input_shape") or []) != [spec.latency.batch_size, *(state.get("input_shape") or [0])[1:]]:
        return None
    fp = (fingerprint_of or device_fingerprint)(device, (threads or default_threads())
                                                if str(device).startswith("cpu") else 1)
    if fp["fingerprint_id"] != (state.get("fingerprint") or {}).get("fingerprint_id"):
        return None
    return state


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _key_distance(a: str, b: str) -> float:
    pa, pb = a.split("-"), b.split("-")
    return sum(0 if x == y else 1 for x, y in zip(pa, pb)) + abs(len(pa) - len(pb))
