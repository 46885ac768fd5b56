"""Quantisation-aware distillation against post-training quantisation, on the default study (accuracy only).

    .venv/bin/python benchmarks/qad.py [--runtimes eager onnxruntime] [--feature-weight 1.0]
                                       [--feature-runtimes eager] [--jobs 2] [--threads 1]
                                       [--rungs 10 50 150] [--out benchmarks/results/qad.json]

For a few int8 candidates of the default study (built-in ViT on mnist5k), in each runtime
(eager: torchao's int8; onnxruntime: ORT's ``quantize_dynamic``), the candidate is
distilled along the study's whole ladder of rungs (the steps and seeds a top-rung
candidate gets in the search) in four ways and measured on the test split as the
study deploys it:

* ``float``: the float model distilled, not quantised (what distillation alone recovers);
* ``ptq``: that float model quantised by the runtime after distillation (post-training);
* ``qad``: distilled through the runtime's fake quantisation (``recovery.quantisation_aware``);
* ``qad_feat``: the same plus the block-feature loss (``recovery.feature_weight``).

Each is paired with the uncompressed model on the same images
(:func:`vitsearch.evaluators.paired.paired_drop`); the goal (issue 24): ``qad``'s drop is at
most half of ``ptq``'s; beside it, the quantisation's own share (a drop minus ``float``'s).
Runtimes run side by side, one process each (``--jobs``), each distilling its own float
model (the same weights: the structure does not depend on the runtime). No timing is involved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

INT8 = {"precision": {"attn": "int8", "mlp": "int8"}}
#: name -> (config, the runtimes it runs in); int4 weights only where the CPU runs them (ORT's MatMulNBits)
CONFIGS = {
    "int8": (INT8, ("eager", "onnxruntime")),
    "int8 + depth 6": ({"depth": {"keep": 6}, **INT8}, ("eager", "onnxruntime")),
    "int8 + depth 6 + heads 4, kv 2": ({"depth": {"keep": 6}, "heads": {"keep": 4, "kv_heads": 2}, **INT8},
                                       ("eager",)),
    "int4-weight + depth 6": ({"depth": {"keep": 6}, "precision": {"attn": "int4-weight", "mlp": "int4-weight"}},
                              ("onnxruntime",)),
}


def session_for(runtime: str, rungs: list[int] | None):
    """The default study's session, deployed to ``runtime`` (with ``rungs`` in place of its ladder when given)."""
    from vitsearch.search.session import load_session
    from vitsearch.search.study import load_study

    spec = load_study("default")
    update = {"latency": spec.latency.model_copy(update={"runtime": runtime})}
    if rungs:
        update["recovery"] = spec.recovery.model_copy(update={"rungs": tuple(rungs)})
    return load_session(spec.model_copy(update=update))


def test_entry(session, prepared, config, base) -> dict:
    """Test top-1 of ``prepared`` deployed as ``config`` in the session's runtime, paired with ``base``'s."""
    from vitsearch.evaluators.paired import paired_drop

    acc, in_runtime = session.pipeline.accuracy(prepared, config, session.data.test, "test")
    drop = paired_drop(base.correct_mask(), acc.correct_mask())
    return {"test_accuracy": acc.top1, "in_runtime": in_runtime, "paired_drop": drop.drop,
            "paired_drop_low": drop.low, "paired_drop_high": drop.high, "discordant": [drop.ref_only, drop.cand_only]}


def distil(session, config, **overrides):
    """The runtime's structure of ``config`` distilled along the study's ladder, with ``overrides`` of its settings."""
    from vitsearch.evaluators.distill import distilled_chain

    pipe = session.pipeline
    settings = {**pipe.recovery_settings(config), **overrides}
    return distilled_chain(session.base, pipe.runtime.structure(config), session.data.train, rungs=pipe.ladder,
                           calibration=session.data.calibration, **settings)


def one_runtime(runtime: str, args) -> dict:
    """Rows of every candidate in ``runtime``: float, ptq, qad, and qad + features where asked."""
    import torch

    from vitsearch.spaces import CompressionConfig

    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    session = session_for(runtime, args.rungs)
    feature_weight = args.feature_weight if runtime in args.feature_runtimes else 0.0
    floats: dict = {}
    pipe = session.pipeline
    identity = CompressionConfig()
    base, _ = pipe.accuracy(pipe.prepare(identity), identity, session.data.test, "test")
    rows = {"uncompressed_test_accuracy": base.top1, "candidates": {}}
    for name, (doc, runtimes) in CONFIGS.items():
        if runtime not in runtimes:
            continue
        config = CompressionConfig.from_dict(doc)
        t0 = time.perf_counter()
        if name not in floats:
            floats[name] = distil(session, config, fake_quant=None, feature_weight=0.0).state_dict()
            log(f"{name}: float distillation {time.perf_counter() - t0:.0f} s")
        ptq = _with_weights(session, config, floats[name])
        scheme = pipe.runtime.fake_quant_scheme(config, pipe.input_shape[0])
        row = {"scheme": scheme.describe(),
               "float": _float_entry(session, config, floats[name], base),
               "ptq": test_entry(session, ptq, config, base)}
        row["qad"] = test_entry(session, distil(session, config, fake_quant=scheme, feature_weight=0.0), config, base)
        log(f"{runtime} {name}: qad {time.perf_counter() - t0:.0f} s")
        if feature_weight > 0:
            row["qad_feat"] = test_entry(session, distil(session, config, fake_quant=scheme,
                                                         feature_weight=feature_weight), config, base)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows["candidates"][name] = row
        log(f"{runtime:<12} {name:<34} " + "  ".join(f"{k} {100 * row[k]['paired_drop']:+.2f}"
                                                     for k in ("float", "ptq", "qad", "qad_feat") if k in row))
    return rows


def _with_weights(session, config, state: dict):
    """The runtime's prepared structure of ``config`` holding ``state`` (strict)."""
    prepared = session.pipeline.prepare(config)
    prepared.load_state_dict(state, strict=True)
    return prepared


def _float_entry(session, config, state: dict, base) -> dict:
    """The distilled float model (no quantisation), on eager, paired with ``base``."""
    from vitsearch.evaluators import evaluate_accuracy
    from vitsearch.evaluators.paired import paired_drop
    from vitsearch.evaluators.runtimes.base import float_structure

    structure = float_structure(config, keep_half=False)
    model = _with_weights(session, structure, state)
    acc = evaluate_accuracy(model, session.data.test, session.device, source="test")
    drop = paired_drop(base.correct_mask(), acc.correct_mask())
    return {"test_accuracy": acc.top1, "paired_drop": drop.drop, "paired_drop_low": drop.low,
            "paired_drop_high": drop.high}


def main() -> None:
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint

    ap = argparse.ArgumentParser()
    ap.add_argument("--runtimes", nargs="+", default=["eager", "onnxruntime"])
    ap.add_argument("--feature-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--rungs", type=int, nargs="+", help="step counts in place of the study's rungs (a quick look)")
    ap.add_argument("--feature-runtimes", nargs="*", default=["eager"], help="runtimes where qad + features is run")
    ap.add_argument("--jobs", type=int, default=2, help="runtimes measured side by side, one process each")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/qad.json"))
    args = ap.parse_args()
    start = time.perf_counter()
    result = {"command": " ".join([".venv/bin/python benchmarks/qad.py", *sys.argv[1:]]), "study": "default",
              "fingerprint": device_fingerprint("cpu", args.threads), "feature_weight": args.feature_weight,
              "drops": "paired_drop* are fractions of the test images (0.01 = 1 point), 95 % paired interval",
              "runtimes": {}}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = pool.map(one_runtime, args.runtimes, [args] * len(args.runtimes))
        result["runtimes"] = dict(zip(args.runtimes, rows))
    result["goal"] = _goal(result)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["goal"], indent=1))


def _goal(result: dict) -> dict:
    """Per runtime and candidate: whether qad's drop is at most half of ptq's (a ptq drop <= 0 has nothing to halve)."""
    out = {}
    for runtime, rows in result["runtimes"].items():
        for name, row in rows["candidates"].items():
            flt, ptq, qad = (row[k]["paired_drop"] for k in ("float", "ptq", "qad"))
            out[f"{runtime}: {name}"] = {"ptq_drop": ptq, "qad_drop": qad, "met": (qad <= ptq / 2) if ptq > 0 else None,
                                        "ptq_quantisation_share": round(ptq - flt, 4),
                                        "qad_quantisation_share": round(qad - flt, 4)}
    return out


if __name__ == "__main__":
    main()
