"""Latency of each knob alone and combined, against the dense fp32 model, in one run.

    python benchmarks/knobs.py [--arch deit_small_patch16_224] [--batch 1 8]

The models are built first, then timed interleaved (round-robin, a few passes each per
round) so that drift of the machine hits all of them alike; each number is the median
of all passes, with the torch thread count fixed. Weights are random (no network):
latency does not depend on their values.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
from vitsearch.evaluators.latency.timing.roundrobin import time_round_robin
from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.compression import compress


def variants(depth: int, heads: int) -> dict[str, dict]:
    """Each knob alone, then strong combinations, for a model of ``depth`` blocks and ``heads`` heads."""
    quarter = max(1, depth // 4)
    return {
        "dense fp32": {},
        "int8 (dyn act + weight)": {"precision": {"attn": "int8", "mlp": "int8"}},
        "int8 weight-only": {"precision": {"attn": "int8-weight", "mlp": "int8-weight"}},
        "bf16": {"precision": {"attn": "bf16", "mlp": "bf16"}},
        "half depth": {"depth": {"keep": depth // 2}},
        # Key k reduces between block k's attention and its MLP: with key 3, blocks 4+ see half.
        "tokens merge 0.5 @4": {"tokens": {"method": "merge", "schedule": {str(min(4, depth - 1)): 0.5}}},
        "tokens merge 0.5, blocks 4+ halved": {"tokens": {"method": "merge", "schedule": {str(min(3, depth - 1)): 0.5}}},
        "tokens prune 0.5 @4": {"tokens": {"method": "prune", "schedule": {str(min(4, depth - 1)): 0.5}}},
        "kv_heads 1": {"heads": {"kv_heads": 1}},
        f"heads {heads // 2} of {heads}": {"heads": {"keep": heads // 2}},
        "mlp structured:0.5": {"sparsity": {"mlp": "structured:0.5"}},
        "mlp 2:4 (masked dense on CPU)": {"sparsity": {"mlp": "2:4"}},
        "combined": {"depth": {"keep": depth - quarter}, "heads": {"kv_heads": 1},
                     "tokens": {"method": "merge", "schedule": {str(quarter): 0.7, str(2 * quarter): 0.7}},
                     "sparsity": {"mlp": "structured:0.25"}, "precision": {"attn": "int8", "mlp": "int8"}},
        "combined, half depth": {"depth": {"keep": depth // 2}, "heads": {"kv_heads": 1},
                                 "tokens": {"method": "merge", "schedule": {str(quarter): 0.7}},
                                 "sparsity": {"mlp": "structured:0.25"}, "precision": {"attn": "int8", "mlp": "int8"}},
    }


def device_name() -> str:
    """CPU model and torch thread count."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def measure(models: dict[str, torch.nn.Module], x: torch.Tensor, passes: int, per_round: int = 2) -> dict[str, float]:
    """Median ms per forward of each model, timed round-robin (``per_round`` passes of each per round)."""
    rounds = max(1, passes // per_round)
    plan = RoundRobinPlan(target_s=0.0, min_passes=rounds * per_round, max_passes=rounds * per_round, rounds=rounds,
                          warmup=3)
    fns = [(lambda m=m: m(x)) for m in models.values()]
    samples = time_round_robin(fns, plan, threads=None, device=torch.device("cpu"), lock=False)
    return {k: statistics.median(v) for k, v in zip(models, samples)}


def main(argv: list[str] | None = None) -> None:
    """Build every variant, time them at each batch size, print a Markdown table."""
    import timm

    ap = argparse.ArgumentParser(prog="python benchmarks/knobs.py", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="deit_small_patch16_224", help="timm architecture (random weights)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--passes", type=int, default=30, help="timed passes per model and batch size")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = timm.create_model(args.arch, pretrained=False).eval()
    depth, heads = len(base.blocks), base.blocks[0].attn.num_heads
    configs = {k: CompressionConfig.from_dict(v) for k, v in variants(depth, heads).items()}
    models = {k: compress(base, c) for k, c in configs.items()}
    size = base.pretrained_cfg.get("input_size", (3, 224, 224))
    results = {b: measure(models, torch.randn(b, *size), args.passes if b == 1 else max(6, args.passes // 3))
               for b in args.batch}
    print(f"{args.arch}, random weights; device: {device_name()}")
    print("ratio = dense fp32 median / variant median, same run, interleaved\n")
    head = "| variant | config | " + " | ".join(f"batch {b} ms | ratio" for b in args.batch) + " |"
    print(head)
    print("|" + "---|" * (2 + 2 * len(args.batch)))
    for name, cfg in configs.items():
        cells = []
        for b in args.batch:
            ms = results[b][name]
            cells += [f"{ms:.2f}", f"{results[b]['dense fp32'] / ms:.2f}x"]
        label = cfg.summary().replace(" | ", "; ")  # keep the Markdown table intact
        print(f"| {name} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
