"""What each knob buys in each runtime: speed-up over the uncompressed model in eager PyTorch.

    python benchmarks/runtimes.py [--model builtin | --model deit_small_patch16_224] [--batch 1 8]
                                  [--runtimes eager onnxruntime compile] [--passes 60]

Every (variant, runtime) program is built first (export + ORT quantisation, or
torch.compile; build time reported apart), checked once against the variant's eager
float outputs, then all of them are timed interleaved in one process (round-robin, a
few passes each per round, several rounds: drift of the machine hits all alike). Each
cell is the median of the uncompressed eager model's passes over the median of the
program's, at one thread. A knob a runtime refuses says so; a program whose outputs are
off the eager tolerance is marked. The built-in model uses its trained weights and real
calibration images; timm architectures use random weights (latency does not depend on
their values) and random images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark script, not the package
from knobs import device_name  # noqa: E402


def variants(depth: int, heads: int) -> dict[str, dict]:
    """The knobs alone, and one strong combination, for a model of ``depth`` blocks and ``heads`` heads."""
    quarter = max(1, depth // 4)
    return {
        "uncompressed fp32": {},
        "int8 (dynamic act + weight)": {"precision": {"attn": "int8", "mlp": "int8"}},
        "int8 weight-only": {"precision": {"attn": "int8-weight", "mlp": "int8-weight"}},
        "int4 weight-only": {"precision": {"attn": "int4-weight", "mlp": "int4-weight"}},
        "half depth": {"depth": {"keep": depth // 2}},
        "tokens merge 0.5 @1/4": {"tokens": {"method": "merge", "schedule": {str(quarter): 0.5}}},
        "tokens prune 0.5 @1/4": {"tokens": {"method": "prune", "schedule": {str(quarter): 0.5}}},
        "kv_heads 1 (GQA)": {"heads": {"kv_heads": 1}},
        f"heads {heads // 2} of {heads}": {"heads": {"keep": heads // 2}},
        "MLP structured 0.5": {"sparsity": {"mlp": "structured:0.5"}},
        "MLP 2:4": {"sparsity": {"mlp": "2:4"}},
        "combined": {"depth": {"keep": depth - quarter}, "heads": {"kv_heads": 1},
                     "tokens": {"method": "merge", "schedule": {str(quarter): 0.7, str(2 * quarter): 0.7}},
                     "sparsity": {"mlp": "structured:0.25"}, "precision": {"attn": "int8", "mlp": "int8"}},
    }


def load(model: str):
    """(base model, calibration images, input size)."""
    from vitsearch.evaluators.data import load_mnist5k
    from vitsearch.evaluators.models import ModelSpec, load_base_model

    if model == "builtin":
        data = load_mnist5k()
        images = torch.stack([data.calibration[i][0] for i in range(64)])
        return load_base_model(ModelSpec()).eval(), images, (1, 28, 28)
    import timm

    torch.manual_seed(0)
    base = timm.create_model(model, pretrained=False).eval()
    size = tuple(base.pretrained_cfg.get("input_size", (3, 224, 224)))
    return base, torch.randn(16, *size, generator=torch.Generator().manual_seed(0)), size


def build(runtime: str, base, config, images, shape) -> tuple[object | None, str]:
    """(deployed or None, note): the program, or why it is not there; a numerics miss is marked."""
    from vitsearch.evaluators.runtimes import NumericsMismatch, get_runtime
    from vitsearch.evaluators.runtimes.numerics import check_numerics, reference_model
    from vitsearch.evaluators.runtimes.support import precision_refusal
    from vitsearch.spaces import prepare

    for part in ("attn", "mlp"):
        why = precision_refusal(runtime, "cpu", getattr(config.precision, part))
        if why is not None:
            return None, "refused"
    rt = get_runtime(runtime)
    prepared = prepare(base, rt.structure(config), calibration=images)
    try:
        deployed = rt.deploy(prepared, config, torch.randn(shape), 1)
    except Exception as exc:  # report the build failure in the table, keep the run going
        return None, f"build failed ({type(exc).__name__})"
    try:
        check_numerics(deployed, reference_model(prepared, config, "cpu"), images, config)
        return deployed, ""
    except NumericsMismatch:
        return deployed, " (outputs off tolerance)"


def run_batch(base, images, size, batch: int, runtimes: list[str], passes: int, names: list[str]) -> dict:
    """Build every (variant, runtime), time them interleaved; {(variant, runtime): (ms, build s, note)}."""
    from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
    from vitsearch.evaluators.latency.timing.roundrobin import time_round_robin
    from vitsearch.spaces import CompressionConfig

    depth, heads = len(base.blocks), base.blocks[0].attn.num_heads
    shape = (batch, *size)
    built, out = {}, {}
    for name, cfg in variants(depth, heads).items():
        if name not in names:
            continue
        config = CompressionConfig.from_dict(cfg)
        for rt in runtimes:
            start = time.perf_counter()
            deployed, note = build(rt, base, config, images, shape)
            print(f"  built {name} in {rt} at batch {batch}: {time.perf_counter() - start:.1f} s {note}",
                  file=sys.stderr, flush=True)
            if deployed is None:
                out[(name, rt)] = (None, None, note)
            else:
                built[(name, rt)] = (deployed, note)
    x = torch.randn(shape)
    keys = list(built)
    fns = [(lambda d=built[k][0]: d(x)) for k in keys]
    plan = RoundRobinPlan(target_s=passes * 0.01, min_passes=passes, max_passes=passes, rounds=6, warmup=3)
    samples = time_round_robin(fns, plan, threads=1, device=torch.device("cpu"))
    for k, s in zip(keys, samples):
        out[k] = (statistics.median(s), built[k][0].build_seconds, built[k][1])
    return out


def table(results: dict, runtimes: list[str], names: list[str]) -> str:
    """Markdown: one row per variant, one column per runtime; speed-up over eager uncompressed."""
    ref = results[("uncompressed fp32", "eager")][0]
    rows = ["| variant | " + " | ".join(runtimes) + " |", "|" + "---|" * (len(runtimes) + 1)]
    for name in names:
        cells = []
        for rt in runtimes:
            ms, build_s, note = results[(name, rt)]
            cells.append(note.strip() if ms is None else f"{ref / ms:.2f}x{note}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    builds = {rt: statistics.median([v[1] for (n, r), v in results.items() if r == rt and v[1] is not None])
              for rt in runtimes}
    rows.append(f"\nuncompressed eager fp32: {ref:.3f} ms; median build time per program: "
                + ", ".join(f"{rt} {s:.1f} s" for rt, s in builds.items()))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    """Build, check and time every variant in every runtime; print one table per batch size."""
    ap = argparse.ArgumentParser(prog="python benchmarks/runtimes.py", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="builtin", help="builtin or a timm architecture (random weights)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--runtimes", nargs="+", default=["eager", "onnxruntime", "compile"])
    ap.add_argument("--passes", type=int, default=60, help="timed passes per program (in 6 rounds)")
    ap.add_argument("--variants", nargs="+", default=None, help="names of the variants to run (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if "compile" in args.runtimes:  # every compiled program stays alive for the interleaved timing
        from vitsearch.evaluators.runtimes.compiled import CompileRuntime

        CompileRuntime.reset_caches = False
        torch._dynamo.config.recompile_limit = torch._dynamo.config.accumulated_recompile_limit = 4096
    base, images, size = load(args.model)
    names = [n for n in variants(len(base.blocks), base.blocks[0].attn.num_heads)
             if args.variants is None or n in args.variants or n == "uncompressed fp32"]
    print(f"{args.model}; device: {device_name()}; CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; ORT/torch at 1 thread")
    for batch in args.batch:
        results = run_batch(base, images, size, batch, args.runtimes, args.passes, names)
        print(f"\nbatch {batch}: speed-up over the uncompressed model in eager PyTorch (same run, interleaved)\n")
        print(table(results, args.runtimes, names), flush=True)


if __name__ == "__main__":
    main()
