"""The one staged evaluation: eager goes through it as a runtime, with the hooks every runtime answers."""

from __future__ import annotations

import pytest

from vitsearch.spaces import CompressionConfig

LATENCY = {"threads": 1, "warmup": 2, "max_runs": 20, "max_seconds": 0.3, "predictor": "off"}
INT8 = {"depth": {"keep": 5}, "precision": {"mlp": "int8"}}


def _pipeline(runtime: str):
    from vitsearch.search.session import load_session
    from vitsearch.search.study import parse_study

    return load_session(parse_study({"name": "pipe", "latency": {**LATENCY, "runtime": runtime}})).pipeline


def test_each_runtime_says_what_torch_prepares_for_it():
    from vitsearch.evaluators.runtimes import get_runtime

    config = CompressionConfig.from_dict({"depth": {"keep": 5}, "precision": {"attn": "fp16", "mlp": "int8"}})
    assert get_runtime("eager").structure(config) is config  # eager realises every knob in torch
    for name in ("onnxruntime", "compile"):  # they quantise themselves: torch prepares the float structure
        structure = get_runtime(name).structure(config)
        assert (structure.precision.attn, structure.precision.mlp, structure.depth) == ("fp16", "fp32", config.depth)
    assert [name for name in ("eager", "onnxruntime", "compile") if get_runtime(name).is_reference] == ["eager"]
    assert get_runtime("eager").identity_fields() == {} and get_runtime("onnxruntime").identity_fields()["runtime"]


def test_an_eager_candidate_goes_through_the_runtime_stages():
    """Built (finalized) as a program, not checked against itself, timed and scored on the eager model."""
    pipe = _pipeline("eager")
    metrics, why = pipe.evaluate(CompressionConfig.from_dict(INT8), 0)
    lat = metrics["latency"]
    assert why is None and lat["runtime"] == "eager" and "numerics" not in lat and lat["source"] == "measured"
    assert {"compress", "build", "latency", "accuracy"} <= set(metrics["phase_seconds"])
    assert metrics["accuracy_source"].startswith("val split of") and "run in" not in metrics["accuracy_source"]
    assert metrics["fingerprint"].get("runtime") is None  # an eager fingerprint is the device's own


def test_a_runtime_candidates_gain_is_judged_on_the_runtimes_own_timing():
    """A stale reference says "no gain"; the uncompressed program timed now in ORT says otherwise: evaluated.
    Its ratios are to the eager model, so a candidate is slower exactly when its ratio is above the uncompressed
    ORT program's (about 0.5 here), not above 1."""
    from vitsearch.search.engine.gain import Reference

    pipe = _pipeline("onnxruntime")
    ref = Reference(latency_ms=1e-6, size_mb=1e9, macs=10**12, latency_source="test", cost_objectives=("latency_ms",))
    shallower = CompressionConfig.from_dict({"depth": {"keep": 4}})  # half the blocks: faster in any runtime
    assert ref.no_gain(pipe.costs(shallower)) is not None  # against the stale figure it looks slower
    metrics, why = pipe.evaluate(shallower, 0, reference=ref)
    assert why is None and metrics["accuracy"] is not None and "run in" not in metrics["accuracy_source"]
    assert metrics["latency"]["runtime"] == "onnxruntime" and "reference latency" in metrics["phase_seconds"]
    base = pipe.measure_config(CompressionConfig())  # the uncompressed ORT program: its ratio to eager
    assert base.ratio < 0.9  # ORT's fp32 program beats eager's: a ratio of 1 would never call a candidate slower
    at_run_start = Reference(base.median_ms, 1e9, 10**12, "measured at run start", ("latency_ms",),
                             latency_ratio=base.ratio)
    slower = {"median_ms": 0.1, "ratio": base.ratio * 1.3, "ratio_low": base.ratio * 1.2,
              "ratio_high": base.ratio * 1.4, "n_runs": 20, "source": "measured"}  # under 1 against eager
    why = at_run_start.no_gain({"config": {"depth": {"keep": 4}}, "latency": slower})
    assert why is not None and "x1.300 [1.200, 1.400] of the uncompressed model" in why


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_measure_config_times_the_deployed_program(runtime):
    res = _pipeline(runtime).measure_config(CompressionConfig.from_dict(INT8))
    assert res.ratio is not None and res.low_ms <= res.median_ms <= res.high_ms
    assert res.fingerprint.get("runtime") == (None if runtime == "eager" else runtime)


def test_a_score_against_the_teacher_follows_its_logits_in_the_runtime():
    """The teacher's val logits are taken once; an int8 candidate in ORT is compared with them as deployed."""
    pipe = _pipeline("onnxruntime")
    teacher = pipe.teacher_logits(pipe.data.val)
    assert teacher.shape == (len(pipe.data.val), 10) and pipe.teacher_logits(pipe.data.val) is teacher
    plain = pipe.score(pipe.prepare(CompressionConfig()), CompressionConfig())
    assert plain.reference_kl is None
    config = CompressionConfig.from_dict(INT8)
    scored = pipe.score(pipe.prepare(config), config, against_teacher=True)
    assert "run in onnxruntime" in scored.source and scored.reference_kl > 0 and 0.5 < scored.reference_agreement < 1
    assert scored.top1 == pipe.score(pipe.prepare(config), config).top1  # the same images, the same answer
