"""Part 2 of the GPU check: every knob's speed-up against the bf16 dense model with SDPA.

For each architecture (timm, random weights: latency needs none) and batch, the reference
is the uncompressed model cast to bf16 as vitsearch casts it (fp32 in and out, SDPA
attention); each row is timed interleaved with it (``measure_interleaved``), so a row's
ratio carries its own interval. Rows: dense fp32 / TF32 / fp16, each knob alone on the
bf16 model, joint configs, fp8 where torchao offers it (sm89+), then torch.compile of the
dense model and a few configs against the compiled dense model (compile seconds are kept
apart: paid once per config, not latency). Each eager row also says which kernels ran:
the aten ops of one forward under torch.profiler (2:4 -> ``_cslt_sparse_mm`` or
``_sparse_semi_structured_*``, int8 -> ``_int_mm``, ...).
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from typing import Any

import torch

from vitsearch.evaluators import InterleavePlan, ModelSpec, load_base_model, measure_interleaved
from vitsearch.evaluators.runtimes import get_runtime
from vitsearch.spaces import compress, prepare
from vitsearch.spaces.config import CompressionConfig

#: aten ops that show a kernel really ran, by what a row asks for
KERNELS = {
    "2:4": ("_cslt_sparse_mm", "_sparse_semi_structured_linear", "_sparse_semi_structured_mm",
            "_sparse_semi_structured_addmm"),
    "int8": ("_int_mm",),
    "int8-weight": ("_weight_int8pack_mm", "int8_weight_only"),
    "int4-weight": ("_weight_int4pack_mm", "_weight_int4pack_mm_with_scales_and_zeros"),
    "fp8": ("_scaled_mm", "_scaled_grouped_mm"),
    "sdpa": ("scaled_dot_product",),
}
BF16 = {"precision": {"attn": "bf16", "mlp": "bf16", "base": "bf16"}}
#: the rows a CPU smoke run measures (one of each kind of code path), against an fp32 reference
SMOKE_ROWS = ("2:4 mlp", "int8 dynamic", "int4 weight-only", "joint: depth")
MODELS = {"deit_s": "timm:deit_small_patch16_224", "deit_b": "timm:deit_base_patch16_224",
          "builtin": "builtin:vitsearch-tiny"}


def variants(depth: int, heads: int, base: str = "bf16") -> list[tuple[str, dict, tuple[str, ...]]]:
    """(name, config dict, kernels expected) for a model of ``depth`` blocks and ``heads`` heads.

    Every knob row is on the model in the ``base`` precision (vitsearch's bf16 cast on a GPU),
    so its ratio to the reference is the knob's own effect; the int rows quantise the linears of
    that model (their activations around stay in the base precision, as a deployment runs them).
    """
    q, h = max(1, depth // 4), str(max(1, depth // 2))

    def bf16(**knobs: Any) -> dict:
        return {"precision": {"attn": base, "mlp": base, "base": base}, **knobs}

    def quantised(kind: str, **knobs: Any) -> dict:
        return {"precision": {"attn": kind, "mlp": kind, "base": base}, **knobs}

    merge = lambda sched: {"method": "merge", "schedule": sched}  # noqa: E731
    return [
        ("dense fp32", {}, ()),
        ("dense tf32", {}, ()),
        ("dense fp16", {"precision": {"attn": "fp16", "mlp": "fp16"}}, ("sdpa",)),
        ("2:4 mlp", bf16(sparsity={"mlp": "2:4"}), ("2:4",)),
        ("2:4 attn", bf16(sparsity={"attn": "2:4"}), ("2:4",)),
        ("2:4 attn+mlp", bf16(sparsity={"attn": "2:4", "mlp": "2:4"}), ("2:4",)),
        ("int8 dynamic (torchao)", quantised("int8"), ("int8",)),
        ("int8 weight-only (torchao)", quantised("int8-weight"), ("int8-weight",)),
        ("int4 weight-only (torchao)", quantised("int4-weight"), ("int4-weight",)),
        ("fp8 dynamic (torchao)", bf16(), ("fp8",)),
        (f"merge mild ({q}: 0.8)", bf16(tokens=merge({str(q): 0.8})), ()),
        (f"merge medium (1: 0.8, {h}: 0.6)", bf16(tokens=merge({"1": 0.8, h: 0.6})), ()),
        (f"merge strong (1: 0.6, {h}: 0.5)", bf16(tokens=merge({"1": 0.6, h: 0.5})), ()),
        (f"depth {depth - q} of {depth}", bf16(depth={"keep": depth - q}), ()),
        (f"GQA kv_heads {heads // 2}", bf16(heads={"kv_heads": heads // 2}), ()),
        ("structured MLP 0.5", bf16(sparsity={"mlp": "structured:0.5"}), ()),
        ("joint: 2:4 mlp + merge medium", bf16(sparsity={"mlp": "2:4"}, tokens=merge({"1": 0.8, h: 0.6})), ("2:4",)),
        (f"joint: depth {depth - q} + GQA + structured 0.3",
         bf16(depth={"keep": depth - q}, heads={"kv_heads": heads // 2}, sparsity={"mlp": "structured:0.3"}), ()),
        ("joint: int8 + merge mild", quantised("int8", tokens=merge({str(q): 0.8})), ("int8",)),
        ("joint: 2:4 attn+mlp + GQA", bf16(sparsity={"attn": "2:4", "mlp": "2:4"}, heads={"kv_heads": heads // 2}),
         ("2:4",)),
    ]


#: configs also timed under torch.compile (by name in :func:`variants`)
COMPILED = ("2:4 mlp", "merge medium", "joint: depth")


def kernel_ops(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """The aten ops (and on CUDA the top kernels) of one forward of ``model`` on ``x``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with torch.inference_mode(), profile(activities=acts) as prof:
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
    ops = Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    out: dict[str, Any] = {"aten": dict(sorted(ops.items()))}
    if x.is_cuda:
        kern = Counter()
        for e in prof.key_averages():
            if getattr(e, "device_time_total", 0) > 0 and not e.key.startswith("aten::"):
                kern[e.key[:90]] += e.device_time_total
        out["cuda_kernels_top"] = [k for k, _ in kern.most_common(8)]
    return out


def ran(ops: dict[str, Any], expect: tuple[str, ...]) -> dict[str, bool]:
    """For each kernel kind expected, whether one of its ops appears in ``ops``."""
    names = " ".join(ops["aten"]) + " " + " ".join(ops.get("cuda_kernels_top", []))
    return {kind: any(k in names for k in KERNELS[kind]) for kind in expect}


def _fp8(model: torch.nn.Module) -> torch.nn.Module:
    """torchao's fp8 dynamic-activation, fp8-weight (per row) on every block linear (sm89+ CUDA)."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise RuntimeError("fp8 needs a CUDA GPU of compute capability >= 8.9")
    quantize_(model.blocks, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return model


def build(base: torch.nn.Module, name: str, config: dict, device: str) -> torch.nn.Module:
    """The candidate for one row: ``compress`` of the base (fp8: torchao on the bf16 model)."""
    model = compress(base, CompressionConfig.from_dict(config), device=device)
    return _fp8(model) if name.startswith("fp8") else model


def interval_row(r: Any, batch: int) -> dict[str, Any]:
    """The JSON fields of one interleaved measurement: speed-up over the reference with its interval."""
    return {"ratio": r.ratio, "ratio_ci": [r.ci_low, r.ci_high], "speedup": 1 / r.ratio,
            "speedup_ci": [1 / r.ci_high, 1 / r.ci_low], "candidate_ms": r.candidate_ms_now,
            "reference_ms": r.reference_ms_now, "images_per_s": batch * 1000 / r.candidate_ms_now,
            "reference_images_per_s": batch * 1000 / r.reference_ms_now, "passes": r.passes,
            "stop_reason": r.stop_reason, "seconds": round(r.seconds, 2)}


class TF32:
    """TF32 matmuls and convolutions on CUDA inside the block (restored after)."""

    def __enter__(self) -> None:
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc: Any) -> None:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def table_rows(key: str, batch: int, device: str, plan: InterleavePlan, deadline: float, emit,
               compiled: bool, smoke: bool = False) -> None:
    """Measure every row of ``key`` (see :data:`MODELS`) at ``batch``; ``emit(row)`` after each.

    ``smoke``: the :data:`SMOKE_ROWS` only, against the fp32 model (bf16 is slow on most CPUs).
    """
    base = load_base_model(ModelSpec(MODELS[key], pretrained=False)).to(device)
    shape = (batch, *base.pretrained_cfg["input_size"])
    x = torch.randn(shape, device=device)
    prec = "fp32" if smoke else "bf16"
    reference = compress(base, CompressionConfig.reference(prec), device=device)
    head = {"model": key, "arch": MODELS[key], "batch": batch, "device": device}
    emit({**head, "row": f"reference: dense {prec} (SDPA)", "kernels": kernel_ops(reference, x)})
    depth, heads = len(base.blocks), base.blocks[0].attn.num_heads
    for name, config, expect in variants(depth, heads, prec):
        if smoke and not name.startswith(SMOKE_ROWS):
            continue
        if time.monotonic() > deadline:
            emit({**head, "row": name, "status": "not measured: out of time"})
            continue
        emit({**head, **_eager_row(base, name, config, expect, reference, shape, x, device, plan)})
    if compiled:
        _compiled_rows(base, depth, heads, head, shape, device, plan, deadline, emit)


def _eager_row(base, name, config, expect, reference, shape, x, device, plan) -> dict[str, Any]:
    row: dict[str, Any] = {"row": name, "config": config, "runtime": "eager"}
    try:
        if name == "dense tf32" and not device.startswith("cuda"):
            raise RuntimeError("TF32 is a CUDA matmul mode")
        started = time.perf_counter()
        model = build(base, name, config, device)
        row["build_seconds"] = round(time.perf_counter() - started, 2)
        row["sparsity_info"] = (getattr(model, "vitsearch_info", {}) or {}).get("sparsity")
        ops = kernel_ops(model, x)
        row.update(kernels_ran=ran(ops, expect), kernels=ops)
        with TF32() if name == "dense tf32" else nullcontext():
            r = measure_interleaved(model, reference, shape, device, plan=plan, lock=False)
        row.update(interval_row(r, shape[0]), status="ok")
    except Exception as exc:  # one row failing is a finding, not the end of the table
        row.update(status="error", error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return row


def _compiled_rows(base, depth, heads, head, shape, device, plan, deadline, emit) -> None:
    """torch.compile (vitsearch's compile runtime) of the dense bf16 model and a few configs."""
    rt = get_runtime("compile")
    type(rt).reset_caches = False  # several programs stay alive: no dynamo reset between them
    torch._dynamo.config.recompile_limit = 64
    example = torch.randn(shape, device=device)
    chosen = [(n, c) for n, c, _ in variants(depth, heads) if n.startswith(COMPILED)]
    programs: dict[str, Any] = {}
    eager_ref = compress(base, CompressionConfig.from_dict(BF16), device=device)
    for name, config in [("dense bf16", BF16), *chosen]:
        row: dict[str, Any] = {**head, "row": f"compiled: {name}", "config": config, "runtime": "compile"}
        if time.monotonic() > deadline:
            emit({**row, "status": "not measured: out of time"})
            continue
        try:
            cfg = CompressionConfig.from_dict(config)
            deployed = rt.deploy(prepare(base, cfg, device=device), cfg, example, None)
            programs[name] = deployed.as_module()
            row["compile_seconds"] = round(deployed.build_seconds, 1)
            against = eager_ref if name == "dense bf16" else programs["dense bf16"]
            row["reference"] = "eager dense bf16" if name == "dense bf16" else "compiled dense bf16"
            r = measure_interleaved(programs[name], against, shape, device, plan=plan, lock=False)
            row.update(interval_row(r, shape[0]), status="ok")
        except Exception as exc:
            row.update(status="error", error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        emit(row)
