"""Global allocation by saliency against uniform structure at equal MACs, on the default study.

    .venv/bin/python benchmarks/allocation.py [--ratios 0.75 0.6 0.5] [--arms uniform saliency saliency-macs]
        [--steps N] [--threads T] [--latency] [--out benchmarks/results/allocation.json]

For each target share of the base model's MACs, the uniform arm keeps the same heads and
MLP width in every block (the (heads, width) pair nearest the target, with the two
removal shares as alike as the head count allows). The ``saliency`` arm removes exactly
as many heads and MLP channel groups, placed by the global allocator
(:mod:`vitsearch.spaces.allocate`, saliency on the study's calibration split), so both
have the same MACs. The ``saliency-macs`` arm lets the allocator also choose between
heads and channels, down to the uniform arm's block MACs. Every model is distilled with
the study's settings for the steps of its top rung (150), then scored on the test
images; drops are paired (same images) against the uncompressed model and against the
uniform arm. Without ``--latency``, accuracy only: the machine's load changes the wall
time, not the figures. With ``--latency`` each arm's model is also timed as the study
times a candidate (eager, batch 1, interleaved with the uncompressed model: its latency
ratio with a 95 % interval), so the arms compare at measured latency, not only MACs;
that needs a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ISA = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8", "fma", "f16c")


def cpu() -> dict:
    """CPU model and the ISA flags that decide which kernels run."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"model": model, "isa": [f for f in ISA if f in flags], "logical_cores": os.cpu_count(),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}


def uniform_at(ratio: float, dims, macs_of) -> tuple[int, int]:
    """(heads, MLP width, a multiple of 8) alike in every block, with MACs within half a width step (8
    channels in every block) of ``ratio`` of the base's: of those, the one whose head and channel removal
    shares are closest (every head count has one)."""
    base = macs_of(dims.num_heads, dims.mlp_hidden)
    step = (base - macs_of(dims.num_heads, dims.mlp_hidden - 8)) / base
    pairs = [(h, w) for h in range(1, dims.num_heads + 1) for w in range(8, dims.mlp_hidden + 1, 8)]
    gap = {p: abs(macs_of(*p) / base - ratio) for p in pairs}
    close = [p for p in pairs if gap[p] <= step / 2] or [min(pairs, key=gap.get)]
    return min(close, key=lambda p: (abs((1 - p[0] / dims.num_heads) - (1 - p[1] / dims.mlp_hidden)), gap[p]))


def configs(ratio: float, arms: list[str], saliency, dims, macs_of) -> dict:
    """The config of each arm at one target ratio."""
    from vitsearch.spaces import CompressionConfig
    from vitsearch.spaces.allocate import Allocation, allocate, allocate_macs, mac_costs

    h, w = uniform_at(ratio, dims, macs_of)
    uniform = Allocation((h,) * dims.depth, (w,) * dims.depth)
    out = {"uniform": uniform}
    heads_removed = 1 - h / dims.num_heads
    mlp_removed = 1 - w / dims.mlp_hidden
    out["saliency"] = allocate(saliency, dims, heads_removed, mlp_removed)
    costs = mac_costs(dims, saliency.group)
    full = dims.depth * (dims.num_heads * costs.head[0] + dims.mlp_hidden // saliency.group * costs.group[0])
    kept = dims.depth * (h * costs.head[0] + w // saliency.group * costs.group[0])
    out["saliency-macs"] = allocate_macs(saliency, dims, kept / full)
    return {arm: out[arm].apply(CompressionConfig(), dims) for arm in arms}


def run_arm(s, ratio: float, arm: str, config, steps: int, base_mask, masks: dict, latency: bool = False) -> dict:
    """Distil one arm's model, score it on the test split, pair it with the base model and the uniform arm."""
    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.distill import recover
    from vitsearch.evaluators.macs import analytic_macs
    from vitsearch.evaluators.paired import paired_drop

    rc = s.spec.recovery
    t0 = time.perf_counter()
    model = recover(s.base, config, s.data.train, steps=steps, lr=rc.lr, batch_size=rc.batch_size,
                    temperature=rc.temperature, alpha=rc.alpha, seed=rc.seed, calibration=s.data.calibration,
                    feature_weight=rc.feature_weight, augment=rc.augment)
    acc = evaluate_accuracy(model, s.data.test, source="test")
    masks[arm] = acc.correct_mask()
    macs = analytic_macs(s.base, config)
    drop = paired_drop(base_mask, masks[arm])
    row = {"target_ratio": ratio, "arm": arm, "config": config.to_dict(), "macs": macs,
           "macs_ratio": round(macs / analytic_macs(s.base), 4), "test_top1": acc.top1, "drop_vs_base": drop.to_dict(),
           "val_top1": evaluate_accuracy(model, s.data.val).top1, "seconds": round(time.perf_counter() - t0, 1)}
    if arm != "uniform" and "uniform" in masks:
        row["drop_vs_uniform"] = paired_drop(masks["uniform"], masks[arm]).to_dict()
    timed = ""
    if latency:  # as the search times a candidate: built in the study's runtime, interleaved with the base
        result = s.pipeline.measure_config(config)
        row["latency"] = {"ms": result.median_ms, "ratio": result.ratio, "ratio_low": result.ratio_low,
                          "ratio_high": result.ratio_high, "n_runs": result.n_runs,
                          "how": "measured: interleaved with the uncompressed model, the study's protocol"}
        timed = f"  latency x{result.ratio:.3f} [{result.ratio_low:.3f}, {result.ratio_high:.3f}]"
    print(f"{ratio:.2f} {arm:<14} MACs {row['macs_ratio']:.3f}{timed}  test {acc.top1:.2%}  vs base {drop.text()}  "
          f"{config.summary()}", flush=True)
    return row


def main() -> None:
    import torch

    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.macs import analytic_macs
    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig
    from vitsearch.spaces.allocate import measure
    from vitsearch.spaces.vit.dims import VitDims

    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.6, 0.5])
    ap.add_argument("--arms", nargs="+", default=["uniform", "saliency", "saliency-macs"])
    ap.add_argument("--steps", type=int, default=None, help="distillation steps (default: the study's top rung)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--latency", action="store_true", help="also time each arm (quiet machine needed)")
    ap.add_argument("--out", default="benchmarks/results/allocation.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started, machine = time.time(), cpu()
    s = load_session("default")
    rc = s.spec.recovery
    steps = args.steps if args.steps is not None else max(rc.ladder)
    dims = VitDims.of(s.base)

    def macs_of(h: int, w: int) -> int:
        return analytic_macs(s.base, CompressionConfig.from_dict(
            {"heads": {"keep": h}, "sparsity": {"mlp_keep": [w] * dims.depth}}))

    t0 = time.perf_counter()
    saliency = measure(s.base, s.data.calibration, "cpu")
    saliency_s = time.perf_counter() - t0
    base_acc = evaluate_accuracy(s.base, s.data.test, source="test")
    rows = []
    for ratio in args.ratios:
        masks: dict = {}
        for arm, config in configs(ratio, args.arms, saliency, dims, macs_of).items():
            rows.append(run_arm(s, ratio, arm, config, steps, base_acc.correct_mask(), masks, args.latency))
    out = {"what": "global allocation by saliency vs uniform structure at equal MACs, default study",
           "command": " ".join([".venv/bin/python", *sys.argv]), "date": time.strftime("%Y-%m-%d"),
           "cpu": machine, "torch": torch.__version__, "threads": args.threads, "steps": steps,
           "distillation": {"lr": rc.lr, "batch_size": rc.batch_size, "temperature": rc.temperature,
                            "alpha": rc.alpha, "seed": rc.seed, "feature_weight": rc.feature_weight,
                            "augment": rc.augment},
           "saliency": {"criterion": saliency.criterion, "group": saliency.group, "seconds": round(saliency_s, 2)},
           "base": {"test_top1": base_acc.top1, "n_test": base_acc.n, "macs": analytic_macs(s.base)},
           "rows": rows, "wall_seconds": round(time.time() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
