"""`latency.runtime` in a study: validation, a candidate evaluated in ONNX Runtime, and its export."""

from __future__ import annotations

import pytest
import torch
from tinystudy import tiny_study_dict

from vitsearch.search.study import parse_study
from vitsearch.spaces import CompressionConfig
from vitsearch.spaces.errors import ConfigError, DeviceError


def _spec(runtime: str, **extra):
    """The tiny study timed in ``runtime`` (20 passes at most, no predictor), ``extra`` sections added."""
    return parse_study(tiny_study_dict(name="rt", data=None, **extra, latency={
        "batch_size": None, "warmup": 2, "max_runs": 20, "predictor": "off", "runtime": runtime}))


def test_runtime_field_and_its_one_line_errors():
    from vitsearch.search.preflight import check_study_runtime

    assert parse_study({}).latency.runtime == "eager"
    with pytest.raises(ConfigError, match=r"field 'latency.runtime': Input should be 'eager', 'compile', "
                                          r"'onnxruntime' or 'tensorrt'; got 'openvino'"):
        _spec("openvino")
    with pytest.raises(DeviceError, match="'tensorrt' cannot be used: it runs on CUDA GPUs only"):
        check_study_runtime(_spec("tensorrt"), torch.device("cpu"))
    explicit = _spec("onnxruntime", space={"precision": {"mlp": ["fp32", "fp16"]}})
    with pytest.raises(ConfigError, match=r"space.precision.mlp: 'fp16' cannot run in runtime 'onnxruntime'"):
        check_study_runtime(explicit, torch.device("cpu"))
    assert check_study_runtime(_spec("onnxruntime"), torch.device("cpu")) == []


def test_search_space_in_a_runtime_offers_what_it_realises(builtin_model):
    from vitsearch.search.preflight import runtime_search_space

    spec = _spec("onnxruntime", space={"precision": {"mlp": ["fp32", "int4-weight"]}})
    space, notes = runtime_search_space(spec, builtin_model, torch.device("cpu"))
    assert notes == [] and space.distributions()["precision.mlp"].choices == ("fp32", "int4-weight")
    with pytest.raises(ConfigError, match="'int4-weight' cannot run in runtime 'eager' on cpu: torchao's int4"):
        runtime_search_space(_spec("eager", space=spec.space.model_dump()), builtin_model, torch.device("cpu"))


def test_candidate_scored_timed_in_ort_and_exported_as_onnx(tmp_path):
    from vitsearch.search.results.export import _program_writer
    from vitsearch.search.results.runtime_export import load_runtime_model
    from vitsearch.search.session import load_session
    from vitsearch.spaces import prepare

    session = load_session(_spec("onnxruntime"))
    config = CompressionConfig.from_dict({"depth": {"keep": 6}, "precision": {"attn": "int8", "mlp": "int8"}})
    ev = session.evaluate(config)
    lat = ev.latency
    assert lat["source"] == "measured" and lat["runtime"] == "onnxruntime" and lat["build_seconds"] > 0
    assert lat["numerics"]["top1_agreement"] >= 0.9 and "MatMulInteger" in lat["realised"]["precision.mlp"]
    assert ev.fingerprint["runtime"] == "onnxruntime" and "build" in ev.phase_seconds
    assert "run in onnxruntime" in ev.accuracy_source and ev.accuracy > 0.9
    assert "in onnxruntime" in ev.summary_lines()[2]
    prepared = prepare(session.base, {"depth": {"keep": 6}}, calibration=session.data.calibration)
    pipe = session.pipeline
    program = pipe.build(prepared, config)
    acc, entry = pipe.score(prepared, config, program), pipe.measure_built(*program)[0]
    assert acc.top1 == ev.accuracy  # the exported program reproduces the recorded accuracy exactly
    note = _program_writer(program[0], session)(tmp_path / "program.pt2")
    assert note["exported"] and note["max_abs_diff_vs_built"] == 0.0 and entry["runtime"] == "onnxruntime"
    loaded = load_runtime_model("onnxruntime", tmp_path / note["file"], "cpu", 1, batch=1)
    x = torch.randn(3, 1, 28, 28)  # a batch-1 program run on 3 images, chunk by chunk
    expected = torch.cat([loaded(x[i:i + 1]) for i in range(3)])
    assert torch.equal(loaded(x), expected) and expected.shape == (3, 10)


def test_a_promotion_in_ort_is_scored_there_and_reproduced_by_picks_rebuild(tmp_path):
    """Every rung is scored as the search deploys it: a promotion distils the float structure (as the first
    rung does) and scores it in ONNX Runtime; pick's rebuild from its checkpoint gives exactly that accuracy,
    and the front's test accuracy is measured in ONNX Runtime too (an older entry measured on eager is not
    trusted: measured again)."""
    import json

    import pandas as pd

    from vitsearch.search.results.testacc import (CACHE_FILE, front_test_accuracy, measure_test_deployed, read_cache,
                                                  rebuild_prepared)
    from vitsearch.search.session import load_session

    session = load_session(_spec("onnxruntime", recovery={"rungs": [1, 2], "reduction": 2}))
    config = CompressionConfig.from_dict({"depth": {"keep": 5}, "precision": {"mlp": "int8"}})
    pipe = session.pipeline
    (tmp_path / "rungs").mkdir()
    rung0 = tmp_path / "rungs" / "trial-0-rung-0.pt"
    first, _ = pipe.evaluate(config, 1, save_to=str(rung0))  # a runtime's first rung keeps its weights too
    assert "run in onnxruntime" in first["accuracy_source"] and rung0.is_file()
    saved = tmp_path / "rungs" / "trial-0-rung-1.pt"
    metrics, _ = pipe.promote(config, first, 1, str(tmp_path / "missing.pt"), str(saved))
    assert "run in onnxruntime" in metrics["accuracy_source"] and metrics["recovery_steps"] == 2
    assert pipe.promote(config, first, 1, str(rung0), None)[0]["accuracy"] == metrics["accuracy"]  # same weights
    prepared = rebuild_prepared(session, pipe.runtime.structure(config), 1, tmp_path, 0)  # pick's: the checkpoint
    program = pipe.build(prepared, config)
    assert pipe.score(prepared, config, program).top1 == metrics["accuracy"]
    test = measure_test_deployed(session, prepared, config, program)  # pick's test figure: on the program
    assert test["measured_in"] == "onnxruntime" and "run in onnxruntime" in test["test_source"]

    stale = {"test_accuracy": 0.123, "test_lo": 0.1, "test_hi": 0.2, "test_n": 500, "test_source": "eager"}
    (tmp_path / CACHE_FILE).write_text(json.dumps({"0:1": stale}))
    assert read_cache(tmp_path, "onnxruntime") == {} and read_cache(tmp_path)["0:1"] == stale
    front = pd.DataFrame([{"number": 0, "rung": 1, "config": json.dumps(config.to_dict())}])
    measured = front_test_accuracy(session, tmp_path, front)  # rebuilt from the checkpoint, built in ORT, on test
    assert measured["test_accuracy"].iloc[0] == test["test_accuracy"] != 0.123
    assert read_cache(tmp_path, "onnxruntime")["0:1"]["measured_in"] == "onnxruntime"
    # measured on another test split (an older vitsearch's 500 images): left out where the session's split is known
    cache = json.loads((tmp_path / CACHE_FILE).read_text())
    older = {**cache["0:1"], "test_source": "mnist5k test split: 500 images (50 per digit, seed 0)", "test_n": 500}
    (tmp_path / CACHE_FILE).write_text(json.dumps({**cache, "0:1": older}))
    assert read_cache(tmp_path, "onnxruntime")["0:1"] == older  # no session: what the run recorded
    assert "0:1" not in read_cache(tmp_path, "onnxruntime", session.data.test_source)
    again = front_test_accuracy(session, tmp_path, front)  # measured again on this split, the stale entry replaced
    assert again["test_n"].iloc[0] == len(session.data.test) and again["test_accuracy"].iloc[0] == test["test_accuracy"]
    assert read_cache(tmp_path, "onnxruntime")["0:1"]["test_n"] == len(session.data.test)


def test_the_report_re_measures_an_ort_front_in_ort():
    """The report's latency check in a runtime study: this machine's fingerprint names the runtime (as the
    search's did), and a front variant is built again in ORT and timed by the interleaved protocol."""
    from vitsearch.search.results.runview import current_fingerprint
    from vitsearch.search.session import load_session

    spec = _spec("onnxruntime")
    here, eager = current_fingerprint(spec), current_fingerprint(_spec("eager"))
    assert here["runtime"] == "onnxruntime" and here["fingerprint_id"] != eager["fingerprint_id"]
    session = load_session(spec)
    res = session.pipeline.measure_config(CompressionConfig.from_dict({"depth": {"keep": 4}, "precision": {"mlp": "int8"}}))
    assert res.ratio is not None and res.low_ms <= res.median_ms <= res.high_ms and res.confidence == 0.95
    assert res.fingerprint["runtime"] == "onnxruntime"
