"""What distillation recovery buys on the built-in model: val accuracy before/after.

    .venv/bin/python benchmarks/recovery.py [--steps 0 100 300]

For a few damaging configs, compresses the built-in model and scores top-1 on the 1,000
mnist5k val images after 0, 100 and 300 KD steps (teacher: the uncompressed model;
batch 64, AdamW at the study's recovery.lr, T=2, alpha 0.5, seed 0). Accuracy only: no timing involved.
"""

from __future__ import annotations

import argparse
import json
import time

CONFIGS = {
    "depth 4 of 8": {"depth": {"keep": 4}},
    "tokens 0.5 at blocks 1 and 3 (prune)": {"tokens": {"method": "prune", "schedule": {"1": 0.5, "3": 0.5}}},
    "kv_heads 1 (GQA)": {"heads": {"kv_heads": 1}},
    "depth 5 + kv 2 + mlp structured 0.5": {"depth": {"keep": 5}, "heads": {"kv_heads": 2},
                                            "sparsity": {"mlp": "structured:0.5"}},
    "mlp 2:4 + attn 2:4": {"sparsity": {"attn": "2:4", "mlp": "2:4"}},
}


def main() -> None:
    import torch

    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.distill import recover
    from vitsearch.search.session import load_session
    from vitsearch.spaces import CompressionConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 100, 300])
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = load_session("default")
    rc = s.spec.recovery
    rows = []
    for name, cfg in CONFIGS.items():
        row = {"config": name}
        for steps in args.steps:
            t0 = time.perf_counter()
            model = recover(s.base, CompressionConfig.from_dict(cfg), s.data.train, steps=steps, lr=rc.lr,
                            batch_size=rc.batch_size, temperature=rc.temperature, alpha=rc.alpha, seed=0,
                            calibration=s.data.calibration, feature_weight=rc.feature_weight, augment=rc.augment)
            row[f"acc@{steps}"] = evaluate_accuracy(model, s.data.val).top1
            row[f"s@{steps}"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'config':<40}" + "".join(f"{'steps ' + str(k):>12}" for k in args.steps))
    for r in rows:
        print(f"{r['config']:<40}" + "".join(f"{r[f'acc@{k}']:>12.2%}" for k in args.steps))
    print("top-1 on the 1,000 mnist5k val images (measured); base model 98.40 %")


if __name__ == "__main__":
    main()
