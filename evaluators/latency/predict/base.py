"""The latency predictor's interface: a fitted state that predicts a config's latency on one device.

Two kinds implement it: the component predictor (:mod:`.component`, per-component
tables summed and corrected; eager profiles) and the whole-model predictor
(:mod:`.whole`, features of the config alone; runtime profiles). Both share what is
here: a first stage linear in the kind's feature row (coefficients, a bootstrap
ensemble, a relative residual spread), a second stage of boosted trees on the log-ratio
(:mod:`.residual`), calibration to the device's speed now, the device and shape checks,
and persistence.

What is predicted: the ratio of the config's latency to the uncompressed model's, as the
interleaved protocol measures it, in ms units: the fit's whole-model targets are the
measured ratios times ``state["reference_ms"]``, so ``Prediction.ratio`` = ms /
reference_ms and ``Prediction.median_ms`` = ratio x reference_ms.

The state is plain data (dicts, lists, floats): a predictor pickles for Ray and saves as
JSON (``predictor.json``, format :data:`FORMAT_VERSION`). ``state["kind"]`` names the
kind ("whole-model"; absent for the component kind): :meth:`LatencyPredictor.load` and
:meth:`LatencyPredictor.from_state` return the matching class.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.evaluators.latency.fingerprint import mismatch_text
from vitsearch.evaluators.latency.predict.prediction import Prediction
from vitsearch.evaluators.latency.predict.residual import CompiledTrees, config_features

PREDICTOR_FILE = "predictor.json"
#: 2: fitted on interleaved ratios to the uncompressed model (:data:`..timing.results.PROTOCOL`).
FORMAT_VERSION = 2


class LatencyPredictor(ABC):
    """Predicts whole-model latency of a CompressionConfig on the device it was profiled on.

    Built by :mod:`.fit` from a profile table; saved and loaded as JSON. Picklable (Ray),
    deterministic and side-effect free; ``predict`` takes microseconds.
    """

    #: ``state["kind"]`` of this kind (None: the component kind, which older files leave out).
    kind: ClassVar[str | None] = None
    _kinds: ClassVar[dict[str | None, type["LatencyPredictor"]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        LatencyPredictor._kinds[cls.kind] = cls

    def __init__(self, state: dict) -> None:
        self.state = state
        self.dims = VitDims.from_dict(state["dims"])
        self.columns: list[str] = list(state["columns"])
        self.coef: list[float] = list(state["coef"])
        self.boot: list[list[float]] = [list(b) for b in state["boot"]]
        self.sigma_rel = float(state["sigma_rel"])
        self._col = {c: i for i, c in enumerate(self.columns)}
        self.residual = state.get("residual")
        self._trees = CompiledTrees(self.residual) if self.residual else None
        self.vocab = state.get("vocab") or {"precision": [], "sparsity": [], "method": []}
        self.scale = float((state.get("calibration") or {}).get("factor", 1.0))

    @classmethod
    def from_state(cls, state: dict) -> "LatencyPredictor":
        """The predictor of ``state``'s kind; ConfigError for a kind this vitsearch does not know."""
        kind = state.get("kind")
        if kind not in LatencyPredictor._kinds:
            raise ConfigError(f"latency predictor: kind {kind!r} is not known; expected one of "
                              f"{sorted(str(k) for k in LatencyPredictor._kinds)}; re-run `vitsearch profile`")
        return LatencyPredictor._kinds[kind](state)

    # ---- what a kind defines ----------------------------------------------------------
    @abstractmethod
    def features(self, config: Any) -> tuple[list[float], list[str]]:
        """The first stage's feature row for ``config`` (over :attr:`columns`), and why it is out of range."""

    @property
    def floor_ms(self) -> float:
        """The least a first-stage prediction may be (a fit never predicts nothing or less)."""
        ref = self.state.get("reference_ms")
        return 0.02 * float(ref) if ref else 1e-6

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
            raise DeviceError(f"latency predictor: {mismatch_text(self.fingerprint, fingerprint)}")

    def check_input_shape(self, shape: tuple[int, ...]) -> None:
        """ConfigError unless ``shape`` is the (batch, C, H, W) the profile was measured at."""
        if tuple(shape) != self.input_shape:
            raise ConfigError(f"latency predictor: fitted for input {self.input_shape}, but the study measures "
                              f"{tuple(shape)}; run `vitsearch profile` for this batch / input size")

    def check_base_precision(self, base_precision: str) -> None:
        """ConfigError unless the profile's ratios are against the model in ``base_precision`` (older: fp32)."""
        profiled = self.state.get("base_precision") or "fp32"
        if profiled != base_precision:
            raise ConfigError(f"latency predictor: profiled against the uncompressed model in {profiled}, but the "
                              f"study deploys it in {base_precision} (model.precision); run `vitsearch profile` "
                              "into another --out")

    # ---- prediction -----------------------------------------------------------------
    def predict(self, config: Any) -> Prediction:
        """Predicted latency of ``config`` (a CompressionConfig) on the profiled device and shape."""
        row, why = self.features(config)
        mean = max(_dot(self.coef, row), self.floor_ms)
        factor = math.exp(self.second_stage(config, mean)) * self.scale
        boot = [max(_dot(b, row), self.floor_ms) * factor for b in self.boot]
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
        """Load from a profile dir or a predictor file (the kind its state names); ConfigError with one line."""
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
            version = state.get("format_version") if isinstance(state, dict) else None
            raise ConfigError(f"latency predictor: {str(p)!r} has format {version!r}, this "
                              f"vitsearch reads {FORMAT_VERSION}; re-run `vitsearch profile`")
        return LatencyPredictor.from_state(state)

    def __getstate__(self) -> dict:
        return self.state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(fingerprint {self.fingerprint_id}, input {self.input_shape}, "
                f"{self.state.get('n_models')} whole-model samples)")


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))
