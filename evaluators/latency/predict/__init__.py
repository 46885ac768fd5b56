"""The latency predictor: the interface (:mod:`.base`) and its two kinds, per-component
(:mod:`.component`) and whole-model (:mod:`.whole`), fitted by :mod:`.fit` with a
second stage of boosted trees (:mod:`.residual`); a study's predictor on disk (:mod:`.study`)."""

from vitsearch.evaluators.latency.predict.base import FORMAT_VERSION, PREDICTOR_FILE, LatencyPredictor
from vitsearch.evaluators.latency.predict.component import ComponentPredictor
from vitsearch.evaluators.latency.predict.prediction import Prediction
from vitsearch.evaluators.latency.predict.whole import WholeModelPredictor

__all__ = ["LatencyPredictor", "ComponentPredictor", "WholeModelPredictor", "Prediction", "FORMAT_VERSION",
           "PREDICTOR_FILE"]
