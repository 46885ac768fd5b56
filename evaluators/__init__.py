"""How good and how costly a model is: data, base models, accuracy (+ distillation
recovery), latency (measurement, device fingerprint, lock), size and MACs."""

from vitsearch.spaces.errors import DataError, DeviceError, ModelError, VitsearchError

from vitsearch.evaluators.accuracy import AccuracyResult, evaluate_accuracy
from vitsearch.evaluators.distill import recover
from vitsearch.evaluators.data import DataSplits, load_imagefolder, load_mnist5k
from vitsearch.evaluators.latency.fingerprint import device_fingerprint, fingerprint_id, resolve_device
from vitsearch.evaluators.latency.lock import device_lock
from vitsearch.evaluators.latency.measure import measure_latency, measure_repeatability
from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
from vitsearch.evaluators.latency.timing.plans import InterleavePlan
from vitsearch.evaluators.latency.timing.results import InterleavedResult, LatencyResult
from vitsearch.evaluators.macs import analytic_macs
from vitsearch.evaluators.models import ModelSpec, create_vitsearch_tiny, load_base_model
from vitsearch.evaluators.latency.predict import LatencyPredictor, Prediction
from vitsearch.evaluators.latency.predict.study import default_profile_dir, load_for_study
from vitsearch.evaluators.record import Evaluation, latency_entry
from vitsearch.evaluators.size import SizeReport, model_size

__all__ = [
    "AccuracyResult", "evaluate_accuracy", "recover",
    "DataSplits", "load_imagefolder", "load_mnist5k",
    "device_lock", "device_fingerprint", "fingerprint_id", "resolve_device",
    "LatencyResult", "measure_latency", "measure_repeatability",
    "InterleavedResult", "InterleavePlan", "measure_interleaved",
    "analytic_macs", "ModelSpec", "create_vitsearch_tiny", "load_base_model",
    "LatencyPredictor", "Prediction", "default_profile_dir", "load_for_study",
    "Evaluation", "latency_entry", "SizeReport", "model_size",
    "VitsearchError", "ModelError", "DataError", "DeviceError",
]
