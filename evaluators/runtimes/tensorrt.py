"""The ``tensorrt`` runtime (CUDA only): the ONNX export built into a TensorRT engine.

Written with care against TensorRT 10's Python API but NOT exercised: no GPU was
available to the developers (``vitsearch doctor --device cuda`` is the first check).

* fp32: TF32 is switched off so fp32 means fp32; fp16/bf16: the exported graph carries the
  torch casts and the network is built *strongly typed*, so TensorRT keeps exactly the
  types the config asks for (no silent down-casting of the fp32 parts).
* 2:4: the ``SPARSE_WEIGHTS`` builder flag lets TensorRT pick sparse tactics for the
  2:4-masked weights (sm80+).
* int8/int4: refused (needs a calibrated QDQ graph; see :mod:`.support`).

The engine runs on torch's current stream with the input and output bound in place.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.runtimes.base import Deployed, Runtime, register
from vitsearch.evaluators.runtimes.support import describe_precision
from vitsearch.spaces.errors import DeviceError

WORKSPACE = 1 << 30


@register
class TensorRTRuntime(Runtime):
    """NVIDIA TensorRT engines from the ONNX export (GPU only; not exercised here)."""

    name = "tensorrt"
    package = "tensorrt"
    pip = "tensorrt onnx onnxscript"
    cuda_only = True

    def changes_numerics(self, config: Any) -> bool:
        """TensorRT fuses and reorders freely: accuracy is measured in the engine."""
        return True

    def deploy(self, prepared: nn.Module, config: Any, example: torch.Tensor, threads: int | None) -> Deployed:
        """Export to ONNX (halves kept), build a strongly typed engine, run it once."""
        from vitsearch.evaluators.runtimes.onnxexport import export_onnx

        if example.device.type != "cuda":
            raise DeviceError(f"latency.runtime: 'tensorrt' needs a CUDA device, got {example.device}; "
                              "use onnxruntime or compile on CPU")
        start = time.perf_counter()
        proto, _ = export_onnx(prepared, config, example, keep_half=True)
        sparse = any(config.sparsity.part(p)[0] == "2:4" for p in ("attn", "mlp"))
        engine_bytes = build_engine(proto.SerializeToString(), sparse)
        run = engine_runner(engine_bytes, example)
        run(example)
        realised = describe_precision(config, lambda v: None if v == "fp32" else f"TensorRT {v} (strongly typed)",
                                      base=False)
        if sparse:
            realised["sparsity"] = "TensorRT SPARSE_WEIGHTS on the 2:4-masked weights"
        return Deployed(self.name, self.version(), run, str(example.device), int(example.shape[0]),
                        time.perf_counter() - start, realised, provider="TensorRT", artifact=engine_bytes)


def build_engine(onnx_bytes: bytes, sparse: bool) -> bytes:
    """A serialized TensorRT engine from ONNX bytes (strongly typed network)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"latency.runtime: TensorRT could not parse the ONNX graph ({errors[:300]})")
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    if hasattr(trt.BuilderFlag, "TF32"):
        cfg.clear_flag(trt.BuilderFlag.TF32)
    if sparse:
        cfg.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    engine = builder.build_serialized_network(network, cfg)
    if engine is None:
        raise DeviceError("latency.runtime: TensorRT failed to build an engine for this candidate")
    return bytes(engine)


def engine_runner(engine_bytes: bytes, example: torch.Tensor):
    """A callable running the engine on torch's current CUDA stream (static shapes)."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    out_shape = tuple(engine.get_tensor_shape(out))

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float().contiguous()
        y = torch.empty(out_shape, dtype=torch.float32, device=x.device)
        context.set_tensor_address(inp, x.data_ptr())
        context.set_tensor_address(out, y.data_ptr())
        if not context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise DeviceError("latency.runtime: TensorRT execution failed")
        return y
    run.engine = engine  # keep the engine alive as long as the callable
    return run
