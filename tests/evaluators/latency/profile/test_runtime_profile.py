"""Profiles and predictors per runtime: a real (tiny) profile in ONNX Runtime and in torch.compile.

Few models, capped timing: nothing asserts a speed. What is checked: the runtime and its
version in the meta, the rows and the fingerprint; build time recorded apart from latency;
the whole-model predictor's ratio and interval; refusals across runtimes (one line, exit 2,
nothing written); predictor-eval in the runtime; a runtime study using its predictor.
"""

from __future__ import annotations

import json

import pytest
import yaml

from vitsearch.evaluators.latency.predict import LatencyPredictor
from vitsearch.evaluators.latency.timing.results import PROTOCOL
from vitsearch.spaces import CompressionConfig
from vitsearch.spaces.errors import DeviceError

STUDY = {
    "name": "runtime-profile-test",
    "latency": {"runtime": "onnxruntime", "batch_size": 1, "threads": 1, "warmup": 1, "max_runs": 6,
                "max_seconds": 0.02, "predictor": "off",
                "interleave": {"chunk": 1, "min_pairs": 3, "max_pairs": 6, "max_seconds": 0.02}},
    "space": {"depth": {"keep_min": 6}, "heads": {"keep": [6], "kv_heads": [2, 6]},
              "tokens": {"shares": [1.0, 0.7]}, "sparsity": {"attn": ["dense"], "mlp": ["dense"]},
              "precision": {"attn": ["fp32"], "mlp": ["fp32", "int8"]}},
}


def _study(tmp_path, name: str, **latency) -> str:
    spec = json.loads(json.dumps(STUDY))
    spec["latency"].update(latency)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _files(root) -> set:
    return {str(p) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def ort_profile(tmp_path_factory):
    """A 3-model profile of the built-in model in ONNX Runtime, through the CLI: (dir, summary, study dir)."""
    import contextlib
    import io

    from vitsearch.search.cli import main

    tmp = tmp_path_factory.mktemp("ortprof")
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setenv("VITSEARCH_LOCK_DIR", str(tmp / "locks"))  # never wait on another test run's device lock
        assert main(["profile", _study(tmp, "ort"), "--out", str(tmp / "prof"), "--models", "3", "--json"]) == 0
    return tmp / "prof", json.loads(buf.getvalue()), tmp


@pytest.mark.slow
def test_ort_profile_names_its_runtime_and_keeps_build_time_apart(ort_profile):
    import onnxruntime

    out, summary, _ = ort_profile
    assert summary["runtime"] == "onnxruntime" and summary["runtime_version"] == onnxruntime.__version__
    # three models, each built again for its second measurement (the sitting spread: phase "repeat")
    assert summary["components"] == 0 and summary["models_total"] == 3 and summary["models_built"] == 6
    assert summary["build_seconds_total"] > 0 and summary["build_failed"] == []
    meta = json.loads((out / "meta.json").read_text())
    assert meta["runtime"] == "onnxruntime" and meta["runtime_version"] == onnxruntime.__version__
    assert meta["fingerprint"]["runtime"] == "onnxruntime" and meta["fingerprint_id"] == summary["fingerprint_id"]
    from vitsearch.evaluators.latency.profile.store import ProfileStore

    rows = ProfileStore(out).rows()
    assert len(rows) == 6 and all(r["kind"] == "model" for r in rows)  # whole models only, no components
    assert sorted(r["phase"] for r in rows) == ["profile"] * 3 + ["repeat"] * 3
    for r in rows:
        assert r["runtime"] == "onnxruntime" and r["fingerprint_id"] == summary["fingerprint_id"]
        assert r["build_seconds"] > 0 and 0 < r["export_seconds"] <= r["build_seconds"]
        assert r["protocol"] == PROTOCOL and r["ratio_low"] <= r["ratio"] <= r["ratio_high"]
        assert len(r["samples_ms"]) == r["n_runs"] == len(r["ref_samples_ms"])  # latency: the timed passes only


@pytest.mark.slow
def test_whole_model_predictor_predicts_a_ratio_with_an_interval(ort_profile):
    out, _, _ = ort_profile
    p = LatencyPredictor.load(out)
    assert p.state["kind"] == "whole-model" and p.state["runtime"] == "onnxruntime" and p.state["reference_ms"] > 0
    assert p.fingerprint["runtime"] == "onnxruntime" and p.state["n_models"] == 3
    pred = p.predict(CompressionConfig.from_dict({"depth": {"keep": 7}, "precision": {"mlp": "int8"}}))
    assert pred.ratio > 0 and pred.low_ms < pred.median_ms < pred.high_ms and not pred.out_of_range
    assert pred.median_ms == pytest.approx(pred.ratio * p.state["reference_ms"])
    unseen = p.predict(CompressionConfig.from_dict({"precision": {"mlp": "int4-weight"}}))
    assert unseen.out_of_range and "int4-weight not profiled" in unseen.reason


@pytest.mark.slow
def test_a_predictor_of_one_runtime_is_refused_by_another(ort_profile, tmp_path, capsys):
    from vitsearch.evaluators.latency.fingerprint import device_fingerprint, fingerprint_id
    from vitsearch.search.cli import main
    from vitsearch.search.session import load_session, study_predictor

    out, _, _ = ort_profile
    before = _files(out)
    eager = _study(tmp_path, "eager", runtime="eager")
    assert main(["predictor-eval", eager, "--profile", str(out), "--n", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "onnxruntime" in err and "eager (torch" in err and "vitsearch profile" in err
    assert _files(out) == before  # nothing written
    with pytest.raises(DeviceError, match=r"fitted for runtime onnxruntime .* measures in runtime eager"):
        study_predictor(load_session(_study(tmp_path, "eager2", runtime="eager", predictor=str(out))))

    # and the other way round: an eager profile (meta + predictor) refused by the ONNX Runtime study
    eager_dir = tmp_path / "eager_prof"
    eager_dir.mkdir()
    state = json.loads((out / "predictor.json").read_text())
    fp = device_fingerprint("cpu", 1)
    (eager_dir / "predictor.json").write_text(json.dumps({**state, "fingerprint": fp}))
    meta = json.loads((out / "meta.json").read_text())
    (eager_dir / "meta.json").write_text(json.dumps({**meta, "fingerprint": fp, "fingerprint_id": fp["fingerprint_id"],
                                                     "runtime": "eager"}))
    before = _files(eager_dir)
    assert main(["profile", _study(tmp_path, "ort"), "--out", str(eager_dir), "--models", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "runtime eager (torch" in err and "onnxruntime" in err and "--out" in err
    assert _files(eager_dir) == before
    with pytest.raises(DeviceError, match=r"fitted for runtime eager .* measures in runtime onnxruntime"):
        study_predictor(load_session(_study(tmp_path, "ort2", predictor=str(eager_dir))))

    # another version of the same runtime is refused too
    old = dict(state["fingerprint"], runtime_version="0.0.1")
    old["fingerprint_id"] = fingerprint_id(old)
    with pytest.raises(DeviceError, match=r"runtime onnxruntime 0\.0\.1 .* runtime onnxruntime \d"):
        LatencyPredictor.from_state({**state, "fingerprint": old}).check_device(state["fingerprint"])


@pytest.mark.slow
def test_ort_study_uses_its_runtime_predictor(ort_profile, tmp_path):
    from vitsearch.search.engine.feasibility import Feasibility
    from vitsearch.search.session import load_session, study_predictor

    out, summary, _ = ort_profile
    session = load_session(_study(tmp_path, "ort", predictor=str(out)))
    predictor = study_predictor(session)
    assert predictor is not None and predictor.fingerprint_id == summary["fingerprint_id"]
    config = CompressionConfig.from_dict({"depth": {"keep": 7}})
    over = Feasibility(1e-6, None, None, predictor=predictor).precheck(config)  # the driver's precheck
    assert over is not None and over.metrics["latency"]["source"] == "predicted"
    metrics, _ = session.pipeline.evaluate(config, 0, predictor=predictor)
    lat = metrics["latency"]
    assert lat["source"] == "predicted" and lat["runtime"] == "onnxruntime"
    assert lat["median_ms"] == pytest.approx(predictor.predict(config).median_ms)
    assert lat["fingerprint_id"] == summary["fingerprint_id"] and "build" not in metrics["phase_seconds"]
    # measured latencies of this study take the runtime profile's reference as their ms basis
    assert session.latency_kwargs()["reference_ms_profile"] == pytest.approx(predictor.state["reference_ms"])


@pytest.mark.slow
def test_predictor_eval_in_onnxruntime(ort_profile, capsys):
    from vitsearch.search.cli import main

    out, _, tmp = ort_profile
    study = tmp / "ort.yaml"
    assert main(["predictor-eval", str(study), "--profile", str(out), "--n", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 2 and res["runtime"] == "onnxruntime" and res["fingerprint"]["runtime"] == "onnxruntime"
    assert res["models_built"] == 2  # each program built once, measured twice
    assert all(r["measured_ratio"] > 0 and r["remeasured_ratio"] > 0 for r in res["rows"])
    assert not {r["config"] for r in res["rows"]} & LatencyPredictor.load(out).trained_keys


@pytest.mark.slow
def test_profile_in_torch_compile(tmp_path, capsys, monkeypatch):
    import torch

    from vitsearch.search.cli import main

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "prof"
    assert main(["profile", _study(tmp_path, "compiled", runtime="compile"), "--out", str(out), "--models", "2",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runtime"] == "compile" and summary["runtime_version"] == torch.__version__
    assert summary["models_total"] == 2 and summary["build_seconds_total"] > 0
    assert json.loads((out / "meta.json").read_text())["fingerprint"]["runtime"] == "compile"
    assert LatencyPredictor.load(out).predict(CompressionConfig()).ratio > 0


def test_budget_stops_before_a_model_that_would_overrun_it():
    import time

    from vitsearch.evaluators.latency.profile.programs import stop_before

    now = time.monotonic()
    assert not stop_before(now + 10, [])  # nothing measured yet: start one
    assert not stop_before(now + 10, [2.0, 4.0])
    assert stop_before(now + 10, [9.0, 12.0])  # one model (build + timing) takes longer than what is left


def test_default_profile_dir_names_the_runtime():
    from vitsearch.evaluators.latency.predict.study import default_profile_dir
    from vitsearch.search.study import parse_study

    assert str(default_profile_dir(parse_study({"name": "s"}))) == "profiles/s"
    assert str(default_profile_dir(parse_study({"name": "s", "latency": {"runtime": "onnxruntime"}}))) == \
        "profiles/s-onnxruntime"
