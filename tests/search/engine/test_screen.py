"""The run-start screen: a precision slower than the uncompressed model on a part alone, or a sparsity with no sparse
kernel on the device, is timed once, and every candidate using it is settled by the driver without evaluation."""

from __future__ import annotations

import json

import optuna
import pytest
from clitools import SMALL_STUDY
from tinystudy import tiny_study_dict

from vitsearch.search.engine.gain import Reference, screen_space
from vitsearch.search.session import load_session
from vitsearch.search.study import parse_study
from vitsearch.spaces import CompressionConfig

#: int8 offered on attention only, few other choices: the screen times attn int8 alone and nothing else
SPACE = {"depth": {"keep_min": 6}, "heads": {"keep": [6], "kv_heads": [6]}, "tokens": {"shares": [1.0]},
         "sparsity": {"attn": ["dense"], "mlp": ["dense", "2:4"]},
         "precision": {"attn": ["fp32", "int8"], "mlp": ["fp32"]}}
ROW = {"knob": "precision", "part": "attn", "value": "int8", "ratio": 2.5, "ratio_low": 2.4, "ratio_high": 2.6,
       "latency_ms": 5.0, "n_runs": 40, "device": "cpu", "screened": True}
SPARSE = {**ROW, "knob": "sparsity", "part": "mlp", "value": "2:4", "ratio": 1.01, "ratio_low": 0.98, "ratio_high": 1.04}


def _reference(*rows) -> Reference:
    return Reference(2.0, 5.0, 1, "measured at run start", ("latency_ms",), screen=rows)


def test_a_screened_precision_matches_uniform_and_per_block_configs_on_its_part_only():
    ref = _reference(ROW, {**ROW, "part": "mlp", "screened": False})
    assert ref.screened_out(CompressionConfig.from_dict({"precision": {"attn": "int8"}})) == ROW
    per_block = CompressionConfig.from_dict({"precision": {"attn": ["fp32", "int8", "fp32", "fp32", "fp32", "fp32",
                                                                     "fp32", "fp32"]}})
    assert ref.screened_out(per_block) == ROW
    assert ref.screened_out(CompressionConfig.from_dict({"precision": {"mlp": "int8"}})) is None  # timed, not slower
    assert ref.screened_out(CompressionConfig()) is None
    text = ref.screen_text(ROW)
    assert "attn int8 alone runs x2.50 [2.40, 2.60]" in text and "not accuracy-evaluated" in text
    json.dumps(vars(ref))  # plain data: the summary writes vars(reference)
    why, metrics, margin = ref.screened(CompressionConfig.from_dict({"precision": {"attn": "int8"}}))
    assert why == text and metrics["latency"]["source"] == "screened" and margin == pytest.approx(1.5 * 2.0)


def test_a_screened_sparsity_matches_its_part_and_value_only():
    ref = _reference(SPARSE)
    assert ref.screened_out(CompressionConfig.from_dict({"sparsity": {"mlp": "2:4"}})) == SPARSE
    for other in ({"sparsity": {"attn": "2:4"}}, {"sparsity": {"mlp": "structured:0.5"}}, {}):
        assert ref.screened_out(CompressionConfig.from_dict(other)) is None
    text = ref.screen_text(SPARSE)
    assert text.startswith("no gain over the same candidate with mlp dense: mlp 2:4 runs as masked dense weights")
    assert "x1.01 [0.98, 1.04]" in text
    assert ref.screened(CompressionConfig.from_dict({"sparsity": {"mlp": "2:4"}}))[2] == pytest.approx(0.02)


def test_sparse_kernels_exist_for_2to4_on_cuda_in_half_precision_only():
    from vitsearch.spaces.knobs.sparsity import sparse_kernel_for

    assert sparse_kernel_for("2:4", "cuda") and sparse_kernel_for("2:4", "cuda:0", "bf16")
    assert not sparse_kernel_for("2:4", "cuda", "fp32") and not sparse_kernel_for("2:4", "cuda", "int8")
    assert not sparse_kernel_for("2:4", "cpu") and not sparse_kernel_for("unstructured:0.5", "cuda", "fp16")


def test_the_screen_times_each_offered_value_alone_on_each_part(tmp_path):
    """Real timing of the built-in model, interleaved: one row per (part, precision other than the base) and per
    (part, sparsity without a kernel on a CPU) the space offers, each with its ratio interval; a precision screened
    exactly where the interval lies above 1, a kernel-less sparsity unless it lies below 1."""
    from vitsearch.search.preflight import runtime_search_space

    spec = parse_study(tiny_study_dict(SMALL_STUDY, space={
        **SPACE, "precision": {"attn": ["fp32", "int8"], "mlp": ["fp32", "int8"]},
        "sparsity": {"attn": ["dense", "2:4"], "mlp": ["dense", "structured:0.5", "unstructured:0.5"]}}))
    session = load_session(spec)
    space, _ = runtime_search_space(spec, session.base, session.device, session.data.calibration)
    rows = screen_space(session, space)
    assert [(r["knob"], r["part"], r["value"]) for r in rows] == [
        ("precision", "attn", "int8"), ("sparsity", "attn", "2:4"), ("precision", "mlp", "int8"),
        ("sparsity", "mlp", "unstructured:0.5")]  # structured pruning shrinks the linears: never screened
    for r in rows:
        assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"] and r["n_runs"] >= 3 and r["device"] == "cpu"
        assert r["screened"] == (r["ratio_low"] > 1.0 if r["knob"] == "precision" else not r["ratio_high"] < 1.0)
    # a part without its base precision (or dense) among the choices has no faster twin in the space: never screened
    spec = parse_study(tiny_study_dict(SMALL_STUDY, space={**SPACE, "precision": {"attn": ["int8"],
                                                                                   "mlp": ["fp32", "int8"]},
                                                           "sparsity": {"attn": ["2:4"], "mlp": ["dense"]}}))
    space, _ = runtime_search_space(spec, session.base, session.device, session.data.calibration)
    assert [(r["part"], r["value"]) for r in screen_space(session, space)] == [("mlp", "int8")]


def test_only_precisions_below_the_base_are_screened():
    from vitsearch.search.engine.gain import _below

    assert "fp32" not in _below("bf16") and "bf16" not in _below("bf16") and "int8" in _below("bf16")
    assert {"fp16", "bf16", "int8"} <= set(_below("fp32"))


def test_the_report_counts_screened_trials_apart():
    import pandas as pd

    from vitsearch.search.results.report import _screened_count, _skipped_count

    frame = pd.DataFrame({"settled": ["no gain", "no gain", "cost budget", None],
                          "accuracy": [None, None, None, 0.9],
                          "latency_source": ["screened", "measured", "predicted", "measured"]})
    assert (_skipped_count(frame), _screened_count(frame)) == (2, 1)


@pytest.mark.slow
def test_a_run_settles_every_candidate_using_a_screened_value_and_evaluates_none(run_dir):
    """The shared small run (the default space, eager, batch 1 on a CPU): torchao's dynamic int8 is slower than fp32
    there (2-3x on every CPU measured, docs/results.md) and 2:4 has no sparse kernel; the run times each once,
    says so, and never evaluates a candidate using a value it screened."""
    screen = json.loads((run_dir / "summary.json").read_text())["reference"]["screen"]
    rows = {(r["part"], r["value"]): r for r in screen}
    assert set(rows) == {("attn", "int8"), ("mlp", "int8"), ("attn", "2:4"), ("mlp", "2:4")}
    for part in ("attn", "mlp"):  # (2:4's verdict turns on a ratio near 1: whichever it is, it is obeyed below)
        assert rows[(part, "int8")]["screened"], f"{part} int8 alone was not slower on this CPU: {rows[(part, 'int8')]}"
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert study.user_attrs["vitsearch_screen"]["rows"] == screen  # kept on the study for its resumes
    trials = study.trials
    settled = [t for t in trials if any(t.params.get(f"{row['knob']}.{part}") == value
                                        for (part, value), row in rows.items() if row["screened"])]
    evaluated = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert settled and evaluated and not [t for t in settled if t.state == optuna.trial.TrialState.COMPLETE]
    for t in settled:
        assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["settled"] == "no gain"
        assert t.constraints["no_gain_vs_uncompressed"] > 0  # the part's measured slowdown, in ms (or a hair)
    assert 1 <= json.loads((run_dir / "summary.json").read_text())["settled_screened"] <= len(settled)
    assert "no gain over the same candidate with attn in the base precision: attn int8 alone runs x" in (
        run_dir / "run.log").read_text()
    said = (run_dir.parent / "run.stderr").read_text()  # what the user read
    assert "screened: attn int8 alone runs x" in said and "by the run-start screen" in said + (
        run_dir.parent / "run.stdout").read_text()
    # search.screen: false turns it off; left on, a study dumps as before it existed
    assert "screen" not in parse_study(tiny_study_dict(SMALL_STUDY)).search.model_dump()
    assert parse_study({"search": {"screen": False}}).search.model_dump()["screen"] is False


@pytest.mark.parametrize("screen", [True, False])
def test_load_inputs_screens_only_when_on(tmp_path, screen):
    """What the driver loads: the screen's rows on the reference (on), none (search.screen: false)."""
    from vitsearch.search.engine.plan import RunPlan
    from vitsearch.search.engine.startup import load_inputs
    from vitsearch.search.results.rundir import RunDir

    spec = parse_study(tiny_study_dict(SMALL_STUDY, space=SPACE, search={"screen": screen}))
    run_dir = RunDir(tmp_path / "run")
    plan = RunPlan(spec, run_dir, False, 1, 1, 1, run_dir.default_storage_url(), None, 1, False)
    inputs = load_inputs(plan, [("accuracy", "maximize"), ("latency_ms", "minimize")])
    assert [(r["part"], r["value"]) for r in inputs.reference.screen] == ([("attn", "int8"), ("mlp", "2:4")] if screen else [])
    assert not run_dir.path.exists()  # a new run's storage is not opened to look for kept rows


def test_the_screen_is_timed_once_per_study_and_kept_on_it(tmp_path):
    """The driver that created the study keeps its rows on it, with the machine they were timed on; a resumed
    start on that machine (and any other driver there) uses them instead of timing again, so a borderline value
    gets one verdict for the whole study; another machine, or a start that does not screen, uses its own."""
    from dataclasses import replace

    from vitsearch.search.engine.gain import SCREEN_ATTR, keep_screen, screen_machine
    from vitsearch.search.engine.plan import RunPlan
    from vitsearch.search.engine.startup import load_inputs
    from vitsearch.search.results.rundir import RunDir

    spec = parse_study(tiny_study_dict(SMALL_STUDY, space=SPACE))
    run_dir = RunDir(tmp_path / "run")
    run_dir.create(spec, {"base_accuracy": 0.9})
    url = run_dir.default_storage_url()
    study = optuna.create_study(study_name="t", storage=url, directions=["maximize", "minimize"])
    kept = {"knob": "precision", "part": "attn", "value": "int8", "ratio": 1.004, "ratio_low": 0.99,
            "ratio_high": 1.02, "latency_ms": 1.0, "n_runs": 9, "device": "cpu", "screened": True}  # borderline
    here = screen_machine(load_session(spec))
    other = Reference(1.0, 1.0, 1, "measured", ("latency_ms",), screen=({**kept, "screened": False},),
                      screen_machine=here)  # a driver that joined before the creator kept its rows
    assert keep_screen(study, other, created=False) is other and SCREEN_ATTR not in study.user_attrs
    first = replace(other, screen=(kept,))
    assert keep_screen(study, first, created=True) is first
    assert study.user_attrs[SCREEN_ATTR] == {"machine": here, "rows": [kept]}
    assert keep_screen(study, other, created=False).screen == (kept,)  # the study's verdict, not this start's
    assert keep_screen(study, replace(other, screen_machine="elsewhere"), created=False).screen == other.screen
    assert keep_screen(study, replace(other, screen=()), created=False).screen == ()  # not screening: nothing
    resumed = RunPlan(spec, run_dir, True, 1, 1, 1, url, None, 1, False)
    inputs = load_inputs(resumed, [("accuracy", "maximize"), ("latency_ms", "minimize")])
    assert inputs.reference.screen == (kept,)  # not timed again: the real timing would give two rows
    study.set_user_attr(SCREEN_ATTR, {"machine": "elsewhere", "rows": [kept]})
    inputs = load_inputs(resumed, [("accuracy", "maximize"), ("latency_ms", "minimize")])
    assert [(r["part"], r["value"]) for r in inputs.reference.screen] == [("attn", "int8"), ("mlp", "2:4")]
