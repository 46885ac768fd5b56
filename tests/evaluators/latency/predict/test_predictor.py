"""Latency predictor: fit on synthetic profiles with known costs, persistence, refusals, intervals.

Nothing asserts a speed: timings on a shared CI machine are noise.
"""

from __future__ import annotations

import json
import pickle
import random

import pytest

from vitsearch.evaluators.latency.predict import LatencyPredictor, Prediction
from vitsearch.evaluators.latency.predict.component import Table
from vitsearch.evaluators.latency.predict.fit import fit_component
from vitsearch.evaluators.latency.predict.keys import attn_key, mlp_key
from vitsearch.evaluators.latency.predict.study import default_profile_dir
from vitsearch.spaces import CompressionConfig, tokens_per_block
from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.vit.dims import VitDims


DIMS = VitDims(embed_dim=32, num_heads=4, head_dim=8, mlp_hidden=64, depth=4, num_patches=16, num_prefix_tokens=1)


FP = {"kind": "cpu", "cpu_model": "test CPU", "threads": 1, "fingerprint_id": "aaaaaaaaaaaa"}


SHAPE = (1, 1, 16, 16)


ANCHORS = list(range(5, 18, 2)) + [17]


HEADS = [(4, 4), (4, 2), (4, 1), (2, 2), (2, 1)]


PRECS = ["fp32", "int8"]


MLPS = {"dense": 64, "structured:0.5": 32}


def attn_cost(h, kv, prec, n):
    return (0.004 * n * (h + 2 * kv) + 0.05) * (2.0 if prec == "int8" else 1.0)


def mlp_cost(f, prec, n):
    return (0.0005 * n * f + 0.03) * (1.5 if prec == "int8" else 1.0)


def reduce_cost(n):
    return 0.02 + 0.001 * n


STEM = 0.2


def synthetic_components():
    rows = [{"part": "stem", "key": "stem", "tokens": 0, "median_ms": STEM}]
    for (h, kv), prec in [(hk, p) for hk in HEADS for p in PRECS]:
        rows += [{"part": "attn", "key": attn_key(h, kv, prec, "dense"), "tokens": n, "precision": prec,
                  "median_ms": attn_cost(h, kv, prec, n)} for n in sorted(set(ANCHORS))]
    for (sp, f), prec in [(m, p) for m in MLPS.items() for p in PRECS]:
        rows += [{"part": "mlp", "key": mlp_key(f, prec, sp), "tokens": n, "precision": prec,
                  "median_ms": mlp_cost(f, prec, n)} for n in sorted(set(ANCHORS))]
    rows += [{"part": "reduce", "key": "merge", "tokens": n, "median_ms": reduce_cost(n)} for n in (9, 13, 17)]
    return rows


def additive_truth(c: CompressionConfig) -> float:
    """The exact sum of parts of ``c`` under the synthetic costs."""
    h = c.heads.keep or 4
    kv = c.heads.kv_heads or h
    f = MLPS[c.sparsity.mlp]
    total = STEM
    for n_a, n_m in tokens_per_block(c, DIMS.num_patches, DIMS.num_prefix_tokens, DIMS.depth):
        total += attn_cost(h, kv, c.precision.attn, n_a) + mlp_cost(f, c.precision.mlp, n_m)
        total += reduce_cost(n_a) if n_m != n_a else 0.0
    return total


def random_configs(n, seed=0):
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        h, kv = rng.choice(HEADS)
        keep = rng.randint(2, 4)
        sched = {str(b): rng.choice([0.75, 0.5]) for b in (0, 1) if rng.random() < 0.5}
        out.add(CompressionConfig.from_dict({
            "depth": {"keep": keep} if keep < 4 else {},
            "heads": {k: v for k, v in (("keep", h), ("kv_heads", kv)) if v != (4 if k == "keep" else h)},
            "tokens": {"schedule": sched} if sched else {},
            "sparsity": {"mlp": rng.choice(list(MLPS))},
            "precision": {"attn": rng.choice(PRECS), "mlp": rng.choice(PRECS)}}))
    return sorted(out, key=lambda c: c.to_json(sort_keys=True))


@pytest.fixture(scope="module")
def configs():
    return random_configs(60)


@pytest.fixture(scope="module")
def additive(configs):
    return fit_component(DIMS, synthetic_components(), [(c, additive_truth(c)) for c in configs], FP, SHAPE)


def test_recovers_known_additive_costs(additive, configs):
    held_out = [c for c in random_configs(120, seed=1) if c not in set(configs)][:30]
    for c in held_out:
        pred = additive.predict(c)
        assert not pred.out_of_range, pred.reason
        assert pred.median_ms == pytest.approx(additive_truth(c), rel=1e-6)
    coef = dict(zip(additive.columns, additive.coef))
    assert coef["attn_fp32"] == pytest.approx(1.0, abs=1e-6) and coef["n_blocks"] == pytest.approx(0.0, abs=1e-6)


def test_learns_per_format_factor_and_per_block_overhead(configs):
    def truth(c):  # int8 attention 1.3x slower in the whole model, plus 0.05 ms per block
        base = additive_truth(c)
        h = c.heads.keep or 4
        extra = 0.0
        for n_a, _ in tokens_per_block(c, DIMS.num_patches, 1, DIMS.depth):
            if c.precision.attn == "int8":
                extra += 0.3 * attn_cost(h, c.heads.kv_heads or h, "int8", n_a)
            extra += 0.05
        return base + extra

    p = fit_component(DIMS, synthetic_components(), [(c, truth(c)) for c in configs], FP, SHAPE)
    coef = dict(zip(p.columns, p.coef))
    # ridge shrinks towards the plain sum, and a per-block overhead is partly collinear
    # with the per-call constants inside the component costs: judge the fit by its
    # predictions, the coefficients only roughly
    assert coef["attn_int8"] == pytest.approx(1.3, rel=0.05) and coef["n_blocks"] > 0.02
    # held out: about 0.25 % off on average, the worst of 20 near 1 % (0.99-1.004 % depending on
    # the BLAS kernels and scikit-learn build: a bound at exactly 1 % decided by the machine)
    errors = [abs(p.predict(c).median_ms / truth(c) - 1) for c in random_configs(20, seed=3)]
    assert sum(errors) / len(errors) < 0.005 and max(errors) < 0.015


def test_second_stage_learns_an_interaction_the_sum_cannot(configs):
    def truth(c):  # int8 attention costs 20 % more in models that also reduce tokens
        slow = c.precision.attn == "int8" and bool(c.tokens.schedule)
        return additive_truth(c) * (1.2 if slow else 1.0)

    train = random_configs(150, seed=7)
    test = [c for c in random_configs(300, seed=8) if c not in set(train)][:40]
    errs = {}
    for residual in (False, True):
        p = fit_component(DIMS, synthetic_components(), [(c, truth(c)) for c in train], FP, SHAPE, residual=residual)
        errs[residual] = sum(abs(p.predict(c).median_ms / truth(c) - 1) for c in test) / len(test)
        again = pickle.loads(pickle.dumps(p))
        assert again.predict(test[0]) == p.predict(test[0])
    assert errs[True] < 0.8 * errs[False] and errs[True] < 0.02


def test_few_samples_fall_back_to_the_sum_of_parts(configs):
    p = fit_component(DIMS, synthetic_components(), [], FP, SHAPE)
    c = configs[0]
    assert p.predict(c).median_ms == pytest.approx(additive_truth(c))
    assert p.predict(c).uncertainty_ms > 0


def test_save_load_and_pickle_round_trip(additive, configs, tmp_path):
    path = additive.save(tmp_path)
    assert path.name == "predictor.json"
    for loaded in (LatencyPredictor.load(tmp_path), LatencyPredictor.load(path), pickle.loads(pickle.dumps(additive))):
        assert loaded.fingerprint_id == "aaaaaaaaaaaa" and loaded.input_shape == SHAPE
        assert loaded.predict_many(configs[:10]) == additive.predict_many(configs[:10])
    assert isinstance(additive.predict(configs[0]), Prediction)


def test_calibration_scales_predictions_by_the_reference_now(additive, configs, tmp_path):
    with pytest.raises(ConfigError, match="no reference timing"):
        additive.calibrated(1.0)  # the synthetic fit has no reference model timing
    base = LatencyPredictor.from_state({**additive.state, "reference_ms": 2.0})
    slow = base.calibrated(2.5, "test")
    assert slow.scale == pytest.approx(1.25) and base.scale == 1.0  # a copy; the original is untouched
    for c in configs[:10]:
        a, b = base.predict(c), slow.predict(c)
        assert b.median_ms == pytest.approx(1.25 * a.median_ms)
        assert b.uncertainty_ms == pytest.approx(1.25 * a.uncertainty_ms)
    loaded = LatencyPredictor.load(slow.save(tmp_path))
    assert loaded.scale == pytest.approx(1.25) and loaded.state["calibration"]["how"] == "test"


def test_missing_or_bad_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="vitsearch profile") as err:
        LatencyPredictor.load(tmp_path / "nope")
    assert "\n" not in str(err.value)
    (tmp_path / "predictor.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        LatencyPredictor.load(tmp_path)


def test_fingerprint_mismatch_refused(additive):
    additive.check_device({"fingerprint_id": "aaaaaaaaaaaa"})
    with pytest.raises(DeviceError, match="bbbbbbbbbbbb") as err:
        additive.check_device({"fingerprint_id": "bbbbbbbbbbbb"})
    assert "\n" not in str(err.value) and "vitsearch profile" in str(err.value)
    with pytest.raises(ConfigError, match="batch"):
        additive.check_input_shape((8, 1, 16, 16))


def test_out_of_range_flagged(additive):
    inside = CompressionConfig.from_dict({"tokens": {"schedule": {"0": 0.5}}})
    assert not additive.predict(inside).out_of_range
    # 16 -> 8 -> 4 patch tokens: 5 with the class token is profiled, 3 (below) is not.
    below = CompressionConfig.from_dict({"tokens": {"method": "prune", "schedule": {"0": 0.5, "1": 0.25}}})
    pred = additive.predict(below)
    assert pred.out_of_range and "prune" in pred.reason and pred.median_ms > 0
    bf16 = CompressionConfig.from_dict({"precision": {"mlp": "bf16"}})
    pred = additive.predict(bf16)
    assert pred.out_of_range and "not profiled" in pred.reason and pred.median_ms > 0


def test_table_interpolates_and_reports_range():
    t = Table([10, 20, 40], [1.0, 2.0, 3.0])
    assert t.at(15) == (1.5, True) and t.at(40) == (3.0, True) and t.at(30) == (2.5, True)
    assert t.at(50)[1] is False and t.at(50)[0] == pytest.approx(3.5)
    assert t.at(5)[1] is False


def test_default_profile_dir_names_the_study():
    from vitsearch.search.study import parse_study

    assert str(default_profile_dir(parse_study({"name": "x"}))) == "profiles/x"


def test_old_protocol_profile_refused(tmp_path):
    (tmp_path / "predictor.json").write_text(json.dumps({"format_version": 1, "coef": []}))
    with pytest.raises(ConfigError, match="old latency protocol") as err:
        LatencyPredictor.load(tmp_path)
    assert "\n" not in str(err.value) and "vitsearch profile" in str(err.value)


def test_prediction_carries_ratio_and_interval(additive, configs):
    base = LatencyPredictor.from_state({**additive.state, "reference_ms": 2.0})
    p = base.predict(configs[0])
    assert p.reference_ms == 2.0 and p.ratio == pytest.approx(p.median_ms / 2.0)
    assert p.low_ms < p.median_ms < p.high_ms
    assert p.high_ms - p.median_ms == pytest.approx(1.6448536 * p.uncertainty_ms)
    entry = p.interval_entry()
    assert entry["confidence"] == 0.9 and entry["ratio_low"] == pytest.approx(p.low_ms / 2.0)
    slow = base.calibrated(3.0, "test").predict(configs[0])
    assert slow.ratio == pytest.approx(p.ratio) and slow.reference_ms == pytest.approx(3.0)


def test_over_budget_only_when_the_interval_is_over(additive, configs):
    from vitsearch.search.engine.feasibility import Feasibility

    c = configs[0]
    p = additive.predict(c)
    assert p.low_ms < p.median_ms
    between = Feasibility((p.low_ms + p.median_ms) / 2, None, None, predictor=additive)
    assert between.precheck(c) is None  # the point estimate is over, the interval is not
    over = Feasibility(p.low_ms * 0.99, None, None, predictor=additive).precheck(c)
    assert over is not None and "95 % probability" in over.text and over.constraints[0] > 0
    measured = {"size_mb": 1.0, "latency": {"median_ms": 2.0, "low_ms": 1.8, "high_ms": 2.2, "source": "measured"}}
    assert Feasibility(1.9, None, None).cost_violation(measured) is None
    assert "2.000 ms [1.800, 2.200]" in Feasibility(1.7, None, None).cost_violation(measured)
    assert Feasibility(1.9, None, None).constraints(measured) == [pytest.approx(-0.1)]


def test_each_kind_loads_as_its_class_and_the_file_format_is_kept(additive, configs, tmp_path):
    from vitsearch.evaluators.latency.predict import ComponentPredictor, WholeModelPredictor
    from vitsearch.evaluators.latency.predict.fit import fit_whole_model

    path = additive.save(tmp_path / "component")
    state = json.loads(path.read_text())
    assert "kind" not in state and state["format_version"] == 2  # the component kind's files are as they were
    assert sorted(state["dims"]) == sorted(["embed_dim", "num_heads", "head_dim", "mlp_hidden", "depth",
                                            "num_patches", "num_prefix_tokens"])
    assert type(LatencyPredictor.load(path)) is ComponentPredictor
    whole = fit_whole_model(DIMS, [(c, additive_truth(c)) for c in configs], FP, SHAPE, {"reference_ms": 2.0})
    loaded = LatencyPredictor.load(whole.save(tmp_path / "whole"))
    assert type(loaded) is WholeModelPredictor and loaded.state["kind"] == "whole-model"
    assert loaded.predict(configs[0]) == whole.predict(configs[0]) and loaded.predict(configs[0]).ratio > 0
    with pytest.raises(ConfigError, match="kind 'another'"):
        LatencyPredictor.from_state({**state, "kind": "another"})
