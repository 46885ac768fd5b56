"""The checks ``vitsearch doctor`` runs (see :mod:`.doctor` for the outcomes and the table).

Kernels run on one 256x256 linear layer with 64 rows of input and are compared with the
fp32 result; runtimes build, check (against eager) and time the built-in model.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

PASS, FAIL, UNAVAILABLE, MISSING = "pass", "fail", "not available", "not installed"


@dataclass
class Check:
    """One line of the doctor's table."""

    group: str
    name: str
    status: str
    detail: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def run_check(group: str, name: str, fn: Callable[[], str], expected: bool = True) -> Check:
    """Run ``fn`` (returns a detail line, raises on failure) as one check.

    ``expected``: whether the device should pass it; an exception then is ``fail``,
    otherwise ``not available``. An ImportError of an optional package is ``not installed``.
    """
    start = time.perf_counter()
    try:
        detail = fn()
        status = PASS
        if not expected:
            detail += " (works, though this device is not expected to run it)"
    except ModuleNotFoundError as exc:
        status, detail = MISSING, f"{exc.name} is not installed ({_install_hint(exc.name)})"
    except Exception as exc:  # a check must report, never crash the doctor
        status = FAIL if expected else UNAVAILABLE
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0][:220] if text else ''}"
    return Check(group, name, status, detail, round(time.perf_counter() - start, 2))


def _install_hint(name: str | None) -> str:
    hints = {"onnxruntime": "pip install onnxruntime (onnxruntime-gpu for CUDA)", "onnx": "pip install onnx",
             "onnxscript": "pip install onnxscript", "tensorrt": "pip install tensorrt", "pynvml": "pip install nvidia-ml-py",
             "torchao": "pip install torchao"}
    return hints.get(name or "", f"pip install {name}")


def close(got: torch.Tensor, ref: torch.Tensor, rel: float, what: str) -> str:
    """A detail line when ``got`` is within ``rel`` (of the reference's max) of ``ref``; AssertionError if not."""
    err = float((got.float() - ref.float()).abs().max()) / max(float(ref.abs().max()), 1e-12)
    if not err <= rel:  # also catches NaN
        raise AssertionError(f"{what}: max error {err:.3g} of the reference's largest value (allowed {rel:g})")
    return f"{what}: max error {err:.2g} vs fp32"


# ---- timing, fingerprint, repeatability ----------------------------------------------
TINY_SHAPE = (1, 1, 28, 28)


def _builtin() -> nn.Module:
    from vitsearch.evaluators.models import ModelSpec, load_base_model

    return load_base_model(ModelSpec()).eval()


def timing_checks(dev: torch.device) -> list[Check]:
    """Timing method, fingerprint (NVML on GPUs) and a short repeatability figure."""
    cuda = dev.type == "cuda"
    return [run_check("timing", "CUDA events" if cuda else "perf_counter", lambda: _timing(dev)),
            run_check("fingerprint", "device", lambda: _fingerprint(dev)),
            run_check("fingerprint", "NVML (GPU clocks, power, driver)", lambda: _nvml(dev), expected=cuda),
            run_check("timing", "repeatability (built-in model, 3 measurements)", lambda: _repeatability(dev))]


def _timing(dev: torch.device) -> str:
    from vitsearch.evaluators.latency.measure import measure_latency

    r = measure_latency(_builtin(), TINY_SHAPE, dev, warmup=3, min_runs=10, max_runs=50, max_seconds=1.0,
                        lock_timeout=120)
    if not r.median_ms > 0:
        raise AssertionError(f"timed passes read {r.median_ms} ms; the clock does not advance")
    how = "CUDA events around each forward, synchronised" if dev.type == "cuda" else "time.perf_counter_ns"
    return f"{how}: {r.n_runs} passes, median {r.median_ms:.3f} ms (p10 {r.p10_ms:.3f}, p90 {r.p90_ms:.3f})"


def _fingerprint(dev: torch.device) -> str:
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint

    fp = device_fingerprint(dev)
    where = fp.get("gpu_name") or fp.get("cpu_model")
    return f"{where}, {fp.get('threads')} threads, torch {fp['torch_version']}, id {fp['fingerprint_id']}"


def _nvml(dev: torch.device) -> str:
    from vitsearch.evaluators.latency.nvml import nvml_info

    if dev.type != "cuda":
        raise RuntimeError("a CPU device has no NVML")
    info = nvml_info(dev.index or 0)
    if info.get("nvml") != "ok":
        raise RuntimeError(str(info.get("nvml")))
    return (f"driver {info.get('driver_version')}, SM {info.get('sm_clock_mhz')}/{info.get('max_sm_clock_mhz')} MHz, "
            f"power limit {info.get('power_limit_w')} W, {info.get('temperature_c')} C")


def _repeatability(dev: torch.device) -> str:
    from vitsearch.evaluators.latency.measure import measure_repeatability

    r = measure_repeatability(_builtin(), TINY_SHAPE, dev, repeats=3, warmup=3, min_runs=10, max_runs=100,
                              max_seconds=0.5, lock_timeout=120)
    medians = "/".join(f"{m:.3f}" for m in r["medians_ms"])
    return f"medians {medians} ms: spread {r['spread']:.1%}, mean deviation {r['mape']:.1%} (load here moves this)"


# ---- kernels ---------------------------------------------------------------------------
def _layer(dev: torch.device) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(256, 256, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, 256, generator=gen) / 16)
    x = torch.randn(64, 256, generator=gen)
    lin, x = lin.to(dev), x.to(dev)
    with torch.inference_mode():
        return lin, x, lin(x)


def _half(dev: torch.device, dtype: torch.dtype) -> str:
    lin, x, ref = _layer(dev)
    with torch.inference_mode():
        got = lin.to(dtype)(x.to(dtype))
    return close(got, ref, 2e-2 if dtype == torch.float16 else 4e-2, f"{dtype} matmul")


def _torchao(dev: torch.device, kind: str) -> str:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    from vitsearch.spaces.knobs.precision import int4_config

    lin, x, ref = _layer(dev)
    make = {"int8": Int8DynamicActivationInt8WeightConfig, "int8-weight": Int8WeightOnlyConfig,
            "int4-weight": lambda: int4_config(256, str(dev))}[kind]  # the packing the precision knob uses
    if kind == "int4-weight":
        lin, x = lin.to(torch.bfloat16), x.to(torch.bfloat16)
    quantize_(lin, make())
    if type(lin.weight) in (torch.Tensor, nn.Parameter):
        raise RuntimeError("torchao left the weight unquantised")
    with torch.inference_mode():
        got = lin(x)
    return close(got, ref, 0.15 if kind == "int4-weight" else 0.05, f"torchao {kind} ({type(lin.weight).__name__})")


def _two_four(dev: torch.device) -> str:
    from vitsearch.spaces.vit import ops

    lin, x, _ = _layer(dev)
    w = (lin.weight * ops.two_four_mask(lin.weight)).half().contiguous()
    ref = x.half() @ w.t()
    sparse = torch.sparse.to_sparse_semi_structured(w)
    with torch.inference_mode():
        got = torch.mm(x.half(), sparse.t())
    return close(got, ref, 1e-2, f"2:4 semi-structured ({type(sparse).__name__}) vs masked dense")


def _ort_kernel(dev: torch.device, kind: str) -> str:
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from vitsearch.evaluators.runtimes.onnxexport import NBITS, dynamic_int8, weight_only_nbits
    from vitsearch.evaluators.runtimes.onnxrt import make_session

    lin, x, ref = _layer(torch.device("cpu"))
    w = numpy_helper.from_array(lin.weight.detach().t().contiguous().numpy(), "W")
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [64, 256])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [64, 256])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with tempfile.TemporaryDirectory() as tmp:
        proto = (dynamic_int8(proto, ["mm"], Path(tmp)) if kind == "int8"
                 else weight_only_nbits(proto, ["mm"], NBITS[kind]))
    session = make_session(proto.SerializeToString(), dev, 1)
    got = torch.from_numpy(session.run(None, {"X": x.numpy()})[0])
    ops = sorted({n.op_type for n in onnx.load_from_string(proto.SerializeToString()).graph.node})
    return close(got, ref, 0.15 if kind == "int4-weight" else 0.05, f"ORT {kind} ({', '.join(ops)})")


def _ort_missing_provider(dev: torch.device) -> str | None:
    """Why ONNX Runtime cannot run on ``dev`` here (a CPU-only build on a GPU), or None."""
    if dev.type != "cuda" or importlib.util.find_spec("onnxruntime") is None:
        return None  # on CPU the CPU provider is always there; a missing package is reported by its check
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return (f"this onnxruntime {ort.__version__} build has no CUDA execution provider "
            f"({', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu for it")


def kernel_checks(dev: torch.device) -> list[Check]:
    """Each precision and sparsity kernel actually executing, vs fp32; expected per the support table."""
    from vitsearch.evaluators.runtimes.support import precision_refusal

    kind = dev.type
    ok = lambda runtime, p: precision_refusal(runtime, kind, p) is None  # noqa: E731
    checks = [run_check("kernel", "fp16 (torch)", lambda: _half(dev, torch.float16), ok("eager", "fp16")),
              run_check("kernel", "bf16 (torch)", lambda: _half(dev, torch.bfloat16), ok("eager", "bf16"))]
    for p in ("int8", "int8-weight", "int4-weight"):
        checks.append(run_check("kernel", f"{p} (torchao)", lambda p=p: _torchao(dev, p), ok("eager", p)))
    no_provider = _ort_missing_provider(dev)
    for p in ("int8", "int4-weight"):
        if no_provider is not None and ok("onnxruntime", p):  # the device could, this onnxruntime build cannot
            checks.append(Check("kernel", f"{p} (ONNX Runtime)", UNAVAILABLE, no_provider))
        else:
            checks.append(run_check("kernel", f"{p} (ONNX Runtime)", lambda p=p: _ort_kernel(dev, p),
                                    ok("onnxruntime", p)))
    checks.append(run_check("kernel", "2:4 semi-structured (torch.sparse)", lambda: _two_four(dev), kind == "cuda"))
    return checks


# ---- runtimes ----------------------------------------------------------------------------
def _runtime(dev: torch.device, name: str, build: bool) -> str:
    from vitsearch.evaluators.runtimes import check_runtime
    from vitsearch.evaluators.runtimes.deploy import build_checked, measure
    from vitsearch.spaces import CompressionConfig, prepare

    rt = check_runtime(name, dev)
    if not build:
        return f"{name} {rt.version()} importable (not built: --quick)"
    base = _builtin()
    config = CompressionConfig()
    images = torch.randn(16, *TINY_SHAPE[1:], generator=torch.Generator().manual_seed(0))
    deployed, num = build_checked(name, prepare(base, config, device=str(dev)), config, TINY_SHAPE, dev,
                                  1 if dev.type == "cpu" else None, images)
    r = measure(deployed, TINY_SHAPE, dev, threads=1 if dev.type == "cpu" else None, warmup=3, min_runs=10,
                max_runs=50, max_seconds=1.0, lock=False)  # a build check: the timing checks take the lock
    checked = "the eager reference itself" if num is None else f"outputs vs eager max diff {num['max_abs_logit_diff']:.1g}"
    return (f"{name} {deployed.version} ({deployed.provider or 'torch'}): built in {deployed.build_seconds:.1f} s, "
            f"{checked}, median {r.median_ms:.3f} ms")


def runtime_checks(dev: torch.device, quick: bool) -> list[Check]:
    """Each runtime's availability and version, and the built-in model built, checked and timed in it."""
    from vitsearch.evaluators.runtimes import get_runtime, runtime_names

    checks = []
    for name in runtime_names():
        rt = get_runtime(name)
        why = rt.unavailable(dev)
        if why is not None:  # no CUDA, or no CUDA provider in this build: not available; else a package missing
            device_lacks = (rt.cuda_only and dev.type != "cuda") or (
                name == "onnxruntime" and _ort_missing_provider(dev) is not None)
            checks.append(Check("runtime", name, UNAVAILABLE if device_lacks else MISSING, why))
        else:
            build = not (quick and name == "compile")
            checks.append(run_check("runtime", name, lambda n=name, b=build: _runtime(dev, n, b)))
    return checks
