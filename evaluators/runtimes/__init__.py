"""Runtimes a candidate is deployed and timed with: eager, torch.compile, ONNX Runtime, TensorRT.

:mod:`.base` holds the contract (:class:`Runtime`, :class:`Deployed`) and the registry;
one module per runtime registers itself on import (their packages load lazily);
:mod:`.support` says which knob is real in which runtime; :mod:`.onnxexport` builds the
ONNX graph and ORT's quantisation; :mod:`.numerics` checks a runtime against eager;
:mod:`.deploy` ties them together for a session (fingerprint, build, check, time).
"""

from vitsearch.evaluators.runtimes.base import (RUNTIMES, Deployed, NumericsMismatch, Runtime, RuntimeModule,
                                                check_runtime, get_runtime, runtime_names)
from vitsearch.evaluators.runtimes import compiled, eager, onnxrt, tensorrt  # noqa: F401  (registers them)

__all__ = ["RUNTIMES", "Deployed", "NumericsMismatch", "Runtime", "RuntimeModule", "check_runtime", "get_runtime",
           "runtime_names"]
