"""The ``onnxruntime`` runtime: the candidate exported to ONNX, quantised by ORT, run in a session.

CPU execution provider on CPU; the CUDA execution provider on GPUs (needs the
``onnxruntime-gpu`` package; written with care, not exercised: no GPU here). The
session runs sequentially with ``threads`` intra-op threads (ORT ignores torch's thread
setting, so the count is fixed when the session is made). Inputs and outputs cross as
numpy on CPU; on CUDA they are bound in place with ``IOBinding`` so no host copy is
timed.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.fakequant import FakeQuantScheme, scheme_for
from vitsearch.evaluators.runtimes.base import Deployed, Runtime, register
from vitsearch.evaluators.runtimes.support import describe_precision
from vitsearch.spaces.errors import DeviceError

PIP = "onnx onnxruntime onnxscript"  # onnxruntime-gpu instead of onnxruntime for the CUDA provider


@register
class OnnxRuntime(Runtime):
    """ONNX Runtime with its own int8 / 8-bit / 4-bit weight quantisation."""

    name = "onnxruntime"
    package = "onnxruntime"
    pip = PIP

    def unavailable(self, device: torch.device) -> str | None:
        """Package missing (onnx, onnxscript too: the exporter needs them), or no CUDA provider on a GPU."""
        why = super().unavailable(device)
        if why is not None:
            return why
        for pkg in ("onnx", "onnxscript"):
            try:
                __import__(pkg)
            except ImportError:
                return f"the exporter needs the {pkg} package; install it with `pip install {PIP}`"
        if device.type == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return ("this onnxruntime has no CUDA execution provider; install it with "
                        "`pip install onnxruntime-gpu` (in place of onnxruntime)")
        return None

    def changes_numerics(self, config: Any) -> bool:
        """ORT's quantisation is not torchao's: any part (any block's entry) not in fp32 changes the numerics."""
        return any(value != "fp32" for _, value in config.precision.named_values(base=False))

    def fake_quant_scheme(self, config: Any, batch: int) -> FakeQuantScheme | None:
        """ORT's scheme (:func:`.onnxexport.quantize`): one dynamic activation range per call of ``batch`` images."""
        return scheme_for("ort", config, images=batch)

    def deploy(self, prepared: nn.Module, config: Any, example: torch.Tensor, threads: int | None) -> Deployed:
        """Export, quantise, open a session and run it once."""
        from vitsearch.evaluators.runtimes.onnxexport import export_onnx, quantize

        start = time.perf_counter()
        cuda = example.device.type == "cuda"
        proto, nodes = export_onnx(prepared, config, example, keep_half=cuda)
        export_s = time.perf_counter() - start
        proto, realised = quantize(proto, nodes, config)
        halves = describe_precision(config, lambda v: f"{v} graph, CUDA provider" if v in ("fp16", "bf16") else None,
                                    base=False)
        for key, text in halves.items():  # a per-block part may hold halves and quantised entries both
            realised[key] = f"{realised[key]}; {text}" if key in realised else text
        blob = proto.SerializeToString()
        session = make_session(blob, example.device, threads)
        run = runner(session, example.device, int(example.shape[0]))
        run(example)  # the first run allocates; it is part of the build, not of latency
        return Deployed(self.name, self.version(), run, str(example.device), int(example.shape[0]),
                        time.perf_counter() - start, realised, provider=session.get_providers()[0], artifact=blob,
                        extra={"export_seconds": round(export_s, 3), "opset": 18})


def make_session(model: bytes | str, device: torch.device, threads: int | None):
    """An ORT session on ``device`` (CPU provider, or CUDA provider first), sequential, ``threads`` intra-op."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if device.type == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(model, opts, providers=providers)
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise DeviceError("latency.runtime: onnxruntime did not start its CUDA provider; install onnxruntime-gpu "
                          "matching your CUDA version")
    return session


def runner(session, device: torch.device, batch: int):
    """A callable running ``session`` on ``device`` (fp32 images -> fp32 logits), built for ``batch``."""
    return _cuda_runner(session, device, batch) if device.type == "cuda" else _cpu_runner(session)


def _cpu_runner(session):
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: x.detach().cpu().float().numpy()})[0]
        return torch.from_numpy(out).float()
    return run


def _cuda_runner(session, device: torch.device, batch: int):
    """Inputs and outputs bound on the GPU with IOBinding (not exercised: no GPU here)."""
    import numpy as np

    inp, out_meta = session.get_inputs()[0], session.get_outputs()[0]
    idx = device.index or 0
    out_shape = [batch, *[int(d) for d in out_meta.shape[1:]]]

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().contiguous()
        y = torch.empty(out_shape, dtype=torch.float32, device=x.device)
        binding = session.io_binding()
        binding.bind_input(inp.name, "cuda", idx, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output(out_meta.name, "cuda", idx, np.float32, out_shape, y.data_ptr())
        session.run_with_iobinding(binding)
        return y
    return run
