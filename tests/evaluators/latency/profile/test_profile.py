"""The device profile: sampling and component plans over the space, and one real small profile ->
fit -> predictor-eval -> calibration -> refine of the built-in model, end to end through the CLI.

Nothing asserts a speed: the end-to-end test checks structure and ranges only, with tiny timing caps.
"""

from __future__ import annotations

import json

import pytest
import yaml

from vitsearch.evaluators.latency.predict import LatencyPredictor
from vitsearch.evaluators.latency.predict.keys import attn_key
from vitsearch.evaluators.latency.profile.components import pick_anchors
from vitsearch.evaluators.latency.timing.results import PROTOCOL
from vitsearch.spaces import CompressionConfig, tokens_per_block
from vitsearch.spaces.vit.dims import VitDims


def test_pick_anchors_spans_min_and_max():
    a = pick_anchors(list(range(3, 51)), 6)
    assert a[0] == 3 and a[-1] == 50 and len(a) == 6
    assert pick_anchors([7, 3, 3]) == [3, 7]


def test_sample_configs_distinct_and_inside_the_space(builtin_model):
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.spaces import SearchSpace

    space = SearchSpace.from_spec({}, builtin_model)
    cs = sample_configs(space, 40, seed=0)
    keys = [c.to_json(sort_keys=True) for c in cs]
    assert len(cs) == 40 and len(set(keys)) == 40
    for c in cs:
        space.params_for(c)  # raises if outside
    again = sample_configs(space, 10, seed=5, presets=False, exclude=set(keys))
    assert not set(c.to_json(sort_keys=True) for c in again) & set(keys)


def test_component_plan_covers_the_space(builtin_model):
    from vitsearch.evaluators.latency.profile.components import plan_components
    from vitsearch.evaluators.latency.profile.sampling import sample_configs
    from vitsearch.spaces import SearchSpace

    space = SearchSpace.from_spec({}, builtin_model)
    dims = VitDims.of(builtin_model)
    plan = plan_components(space, dims)
    for c in sample_configs(space, 60, seed=2):
        h = c.heads.keep or dims.num_heads
        assert attn_key(h, c.heads.kv_heads or h, c.precision.attn, c.sparsity.attn) in plan.attn
        for n_a, n_m in tokens_per_block(c, dims.num_patches, dims.num_prefix_tokens, dims.depth):
            assert min(plan.token_counts) <= n_m <= n_a <= max(plan.token_counts)


# ---- a real (tiny) profile of the built-in model, end to end ------------------------------------
SMALL_STUDY = {
    "name": "predictor-test",
    "latency": {"batch_size": 1, "threads": 1, "warmup": 1, "max_runs": 6, "max_seconds": 0.02,
                "interleave": {"chunk": 1, "min_pairs": 3, "max_pairs": 6, "max_seconds": 0.02}},
    "space": {"depth": {"keep_min": 6}, "heads": {"keep": [6], "kv_heads": [2, 6]},
              "tokens": {"shares": [1.0, 0.7]}, "sparsity": {"attn": ["dense"], "mlp": ["dense", "structured:0.5"]},
              "precision": {"attn": ["fp32"], "mlp": ["fp32", "int8"]}},
}


@pytest.mark.slow
def test_profile_fit_predict_eval_end_to_end(tmp_path, monkeypatch, capsys):
    from vitsearch.evaluators.latency.profile import run
    from vitsearch.evaluators.latency.profile.store import ProfileStore
    from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
    from vitsearch.search.cli import main

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(run, "COMPONENT_PLAN", RoundRobinPlan(target_s=0.005, min_passes=3, max_passes=6,
                                                              rounds=1, warmup=1))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(SMALL_STUDY))
    out = tmp_path / "prof"
    assert main(["profile", str(study), "--out", str(out), "--models", "6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["models_total"] == 6 and summary["components"] > 10
    assert (out / "predictor.json").is_file() and list((out / "timings").glob("part-*.parquet"))

    rows = ProfileStore(out).rows()
    assert all(r["fingerprint_id"] == summary["fingerprint_id"] and len(r["samples_ms"]) == r["n_runs"] for r in rows)
    models = [r for r in rows if r["kind"] == "model" and r["phase"] == "profile"]
    assert len(models) == 6 and all(r["protocol"] == PROTOCOL and 3 <= r["chunks"] <= 6 for r in models)
    # phase 3: the earliest models measured again (all six here: fewer than REPEATS), minutes later in a real profile
    repeats = [r for r in rows if r["kind"] == "model" and r["phase"] == "repeat"]
    assert sorted(r["key"] for r in repeats) == sorted(r["key"] for r in models)
    assert all(r["ratio_low"] <= r["ratio"] <= r["ratio_high"] and len(r["ref_samples_ms"]) == r["n_runs"]
               for r in models)
    fitted = LatencyPredictor.load(out)
    assert fitted.state["latency_protocol"] == PROTOCOL and fitted.state["reference_ms"] > 0
    assert fitted.state["sitting_pairs"] == 6 and 0.0 <= fitted.state["sitting_sd"] < 0.5
    assert fitted.state["n_models"] == 6  # a second measurement is spread, not another training point
    # resumable: a second run measures nothing new
    assert main(["profile", str(study), "--out", str(out), "--models", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models_measured_now"] == 0

    assert main(["predictor-eval", str(study), "--profile", str(out), "--n", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and res["set"] == "uniform" and res["predict_ms"] > 0
    assert 0 <= res["where_it_decides"]["no_gain_agreement"] <= 1
    cover = res["interval_coverage"]  # the first interval (with the profile's spread) against the second ratio
    assert cover["n"] == 3 and 0 <= cover["share"] <= 1 and cover["sitting_sd"] == fitted.state["sitting_sd"]
    for part in ("predicted", "repeatability", "predicted_vs_mean_of_two"):
        s = res[part]
        assert s["n"] == 3 and 0 <= s["within_5pct"] <= s["within_10pct"] <= 1 and s["mape"] >= 0
        lo, hi = s["within_10pct_ci"]
        assert 0 <= lo <= s["within_10pct"] <= hi <= 1  # Wilson interval around the share
    trained = LatencyPredictor.load(out).trained_keys
    assert not {r["config"] for r in res["rows"]} & trained  # held out: never used in fitting
    assert all(r["measured_ratio"] > 0 and r["remeasured_ratio"] > 0 for r in res["rows"])

    # latency.calibrate: the run's predictor is rescaled by the reference model timed now
    from vitsearch.search.session import load_session, study_predictor

    spec = yaml.safe_load(study.read_text())
    spec["latency"] = {**spec.get("latency", {}), "predictor": str(out), "calibrate": True}
    study.write_text(yaml.safe_dump(spec))
    calibrated = study_predictor(load_session(study))
    cal = calibrated.state["calibration"]
    assert calibrated.scale == pytest.approx(cal["reference_ms_now"] / cal["reference_ms_profile"])
    assert calibrated.scale > 0
    assert "run start" in cal["how"]
    from vitsearch.search.engine.feasibility import Feasibility

    # the factor travels with every predicted latency the engine records
    over = Feasibility(1e-6, None, None, predictor=calibrated).precheck(CompressionConfig())
    assert over.metrics["latency"]["calibration_factor"] == pytest.approx(calibrated.scale, abs=1e-4)

    assert main(["profile", str(study), "--out", str(out), "--refine", "--refine-n", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models_total"] >= 7


def test_cli_errors_are_one_line(tmp_path, capsys):
    from vitsearch.search.cli import main

    assert main(["predictor-eval", "default", "--profile", str(tmp_path / "none"), "--n", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--n" in err and "\n" not in err


def test_old_protocol_profile_dir_refused_by_profile(tmp_path, capsys):
    from vitsearch.search.cli import main

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(SMALL_STUDY))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"fingerprint_id": "x", "model": "builtin:vitsearch-tiny"}))
    assert main(["profile", str(study), "--out", str(tmp_path / "old"), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert "old latency protocol" in err and "\n" not in err
    assert not (tmp_path / "old" / "timings").exists()  # nothing written
