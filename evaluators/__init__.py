"""How good and how costly a model is: data, base models, accuracy (+ distillation
recovery), latency (measurement, device fingerprint, lock), size and MACs."""

from vitsearch.spaces.errors import DataError, DeviceError, ModelError, VitsearchError

from .accuracy import AccuracyResult, evaluate_accuracy, recover
from .data import DataSplits, load_imagefolder, load_mnist5k
from .devicelock import device_lock
from .fingerprint import device_fingerprint, fingerprint_id, resolve_device
from .latency import LatencyResult, measure_latency, measure_repeatability
from .macs import analytic_macs
from .models import ModelSpec, create_vitsearch_tiny, load_base_model
from .predictor import LatencyPredictor, Prediction, default_profile_dir, load_for_study
from .record import Evaluation, latency_entry
from .size import SizeReport, model_size

__all__ = [
    "AccuracyResult", "evaluate_accuracy", "recover",
    "DataSplits", "load_imagefolder", "load_mnist5k",
    "device_lock", "device_fingerprint", "fingerprint_id", "resolve_device",
    "LatencyResult", "measure_latency", "measure_repeatability",
    "analytic_macs", "ModelSpec", "create_vitsearch_tiny", "load_base_model",
    "LatencyPredictor", "Prediction", "default_profile_dir", "load_for_study",
    "Evaluation", "latency_entry", "SizeReport", "model_size",
    "VitsearchError", "ModelError", "DataError", "DeviceError",
]
