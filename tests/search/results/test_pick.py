"""`vitsearch pick`: choosing within a budget, exit codes, and exported variants that load back.

The choice rules are tested on synthetic fronts; the export on one real small run built
once for the module (8 trials, one worker, Ray capped at 2 CPUs).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from clitools import vitsearch

from vitsearch.spaces.errors import ConfigError, NothingWithinBudget


def refused(capsys, *argv) -> tuple[int, str]:
    """``vitsearch ARGV`` in this process, for a refusal (exit 2) or nothing within the budget (exit 3): its exit
    code and stderr (what a real process adds is test_command_input.py's)."""
    from vitsearch.search.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def front(*rows):
    return pd.DataFrame([{"number": n, "accuracy": a, "budget_ms": ms, "size_mb": mb, "summary": f"cfg{n}",
                          "budget_source": "measured (as recorded)"} for n, a, ms, mb in rows])


FRONT = front((1, 0.90, 1.0, 1.0), (2, 0.95, 2.0, 2.0), (3, 0.97, 3.0, 4.0), (4, 0.98, 4.0, 5.0))


def test_most_accurate_within_budget_wins():
    from vitsearch.search.results.pick import choose, runner_up_line

    c = choose(FRONT, 3.5)
    assert int(c.winner["number"]) == 3 and int(c.runner_up["number"]) == 2
    assert "most accurate (97.00%)" in c.why and "1 more accurate" in c.why
    assert "runner-up: trial 2" in runner_up_line(c)
    assert int(choose(FRONT, 3.0).winner["number"]) == 3  # the budget is inclusive
    assert int(choose(FRONT, 100, max_size_mb=2.5).winner["number"]) == 2
    assert int(choose(FRONT, 100, min_accuracy=0.975).winner["number"]) == 4
    only = choose(FRONT, 1.5)
    assert int(only.winner["number"]) == 1 and only.runner_up is None


def test_with_closeness_the_variant_closest_to_the_teacher_wins():
    """``closeness`` ranks only the variants within what was asked (it is called with those rows), the smallest val KL
    from the teacher first, ties to the faster; the most accurate on val top-1 need not win."""
    from vitsearch.search.results.pick import choose, runner_up_line

    kls = {1: 0.09, 2: 0.04, 3: 0.05, 4: 0.01}
    called = []

    def closeness(rows):
        called.append(sorted(int(n) for n in rows["number"]))
        return rows["number"].map(kls)

    c = choose(FRONT, 3.5, closeness=closeness)
    assert called == [[1, 2, 3]]  # trial 4 is over the budget: never rebuilt
    assert int(c.winner["number"]) == 2 and int(c.runner_up["number"]) == 3  # 97 % val lost to 95 %
    assert "closest to the teacher on val (KL 0.0400; 95.00% val top-1) of 3 Pareto variant(s)" in c.why
    assert c.asked["choose_by"] == "teacher" and choose(FRONT, 3.5).asked["choose_by"] == "top1"
    assert "KL +0.0100" in runner_up_line(c)
    tie = choose(FRONT, 3.5, closeness=lambda rows: rows["number"].map({1: 0.05, 2: 0.05, 3: 0.05}))
    assert int(tie.winner["number"]) == 1  # equally close: the faster
    # values for other rows than those within what was asked (here positional, while trial 1 is filtered out): refused
    with pytest.raises(ValueError, match="closeness: its values are for rows"):
        choose(FRONT, 3.5, min_accuracy=0.92, closeness=lambda rows: pd.Series([0.01, 0.02]))
    # the fastest within a drop (no latency budget) is chosen on latency: closeness is not asked
    assert int(choose(FRONT, max_drop=5, base_accuracy=0.98, closeness=lambda rows: 1 / 0).winner["number"]) == 2


def test_the_teacher_ranks_the_front_and_the_top_rungs_other_trials():
    """A trial off the front by val top-1 that reached the top rung is a candidate; one that did not, an infeasible
    one and a reused duplicate are not; a study without rungs offers its front alone."""
    from types import SimpleNamespace

    from vitsearch.search.results.pick import choose, runner_up_line
    from vitsearch.search.results.runview import Remeasure, front_latency, top_rung_pool

    cols = ["number", "state", "feasible", "reused_from", "rung", "accuracy", "latency_ms"]
    frame = pd.DataFrame([(0, "COMPLETE", True, None, 2, 0.97, 1.0), (1, "COMPLETE", True, None, 2, 0.99, 3.0),
                          (2, "COMPLETE", True, None, 2, 0.96, 2.0),  # off the front (0 is faster and better)
                          (3, "COMPLETE", True, None, 1, 0.95, 1.5),  # stopped a rung lower
                          (4, "COMPLETE", False, None, 2, 0.99, 0.5),  # infeasible
                          (5, "COMPLETE", True, 2, 2, 0.96, 2.0),  # a duplicate of trial 2
                          (6, "FAIL", None, None, None, None, None)], columns=cols)
    front = frame.iloc[[0, 1]]
    view = SimpleNamespace(frame=frame, front=front, objectives=[("accuracy", "maximize"), ("latency_ms", "minimize")],
                           spec=SimpleNamespace(recovery=SimpleNamespace(ladder=(10, 50, 150))))
    pool = top_rung_pool(view)
    assert list(pool["number"]) == [0, 2, 1]  # by latency
    rows = pool.assign(budget_ms=pool["latency_ms"], size_mb=1.0, summary="cfg", budget_source="measured")
    c = choose(rows, 2.5, closeness=lambda r: r["number"].map({0: 0.05, 2: 0.03}), pool="top-rung or Pareto")
    assert int(c.winner["number"]) == 2 and "of 2 top-rung or Pareto variant(s) within 2.5 ms" in c.why
    assert "1 more accurate or slower top-rung or Pareto variant(s)" in c.why
    assert c.asked == {"latency_ms": 2.5, "choose_by": "teacher", "ranked_among": "top-rung or Pareto"}
    with pytest.raises(NothingWithinBudget, match="no top-rung or Pareto variant within 0.5 ms"):
        choose(rows, 0.5, closeness=lambda r: r["number"].map({}), pool="top-rung or Pareto")
    alone = choose(rows.iloc[[1]], 2.5, closeness=lambda r: r["number"].map({2: 0.03}), pool="top-rung or Pareto")
    assert "the only top-rung or Pareto variant within" in runner_up_line(alone)
    # re-measured latencies must cover every row ranked: one left out would drop out of the budget unsaid
    table = pd.DataFrame({"number": [0, 1], **{k: [1.0, 3.0] for k in ("remeasured_ms", "remeasured_low_ms",
                          "remeasured_high_ms", "remeasured_p10_ms", "remeasured_p90_ms", "remeasured_ratio")},
                          "remeasured_confidence": 0.95, "remeasured_runs": 10})
    with pytest.raises(ValueError, match=r"trial\(s\) \[2\] were not re-measured"):
        front_latency(view, Remeasure(True, "", table=table), pool)
    assert list(front_latency(view, Remeasure(True, "", table=table), front)["budget_ms"]) == [1.0, 3.0]
    view.spec.recovery.ladder = (0,)
    assert top_rung_pool(view) is front


def test_nothing_within_budget_names_the_fastest():
    from vitsearch.search.results.pick import choose

    with pytest.raises(NothingWithinBudget, match=r"within 0.5 ms with high probability; the fastest is trial 1 at 1.000 ms") as exc:
        choose(FRONT, 0.5)
    assert exc.value.exit_code == 3
    with pytest.raises(NothingWithinBudget, match="accuracy >= 99.00%"):
        choose(FRONT, 10, min_accuracy=0.99)


def test_within_budget_means_the_interval_high_end():
    from vitsearch.search.results.pick import choose

    f = FRONT.assign(budget_high_ms=[1.1, 2.2, 3.3, 4.4], budget_confidence=[0.95, 0.95, 0.9, 0.95])
    c = choose(f, 3.0)  # trial 3's point estimate (3.0) is within, its interval's high end (3.3) is not
    assert int(c.winner["number"]) == 2
    assert "within budget with >= 97.5 % probability" in c.why and "high end 2.200 ms of its 95 % interval" in c.why
    assert int(choose(f, 3.3).winner["number"]) == 3
    assert "within budget with >= 95.0 % probability" in choose(f, 3.3).why


def test_fastest_within_max_drop_wins():
    """--max-drop alone: the fastest variant at most P val points below the uncompressed model; with a latency
    budget too: the most accurate within both."""
    from vitsearch.search.results.pick import choose, runner_up_line

    c = choose(FRONT, max_drop=1, base_accuracy=0.98)  # floor 97 %: trials 3 and 4
    assert int(c.winner["number"]) == 3 and int(c.runner_up["number"]) == 4
    assert "the fastest of 2 Pareto variant(s) within 1 val point of the uncompressed model (98.00% val)" in c.why
    assert "2 more Pareto variant(s) are not within what was asked" in c.why
    assert "(+1.0 val points, unpaired, +1.000 ms latency vs the winner)" in runner_up_line(c)
    assert c.asked == {"max_drop_points": 1}
    assert int(choose(FRONT, max_drop=0, base_accuracy=0.98).winner["number"]) == 4
    assert int(choose(FRONT, max_drop=10, base_accuracy=0.98).winner["number"]) == 1
    both = choose(FRONT, 3.5, max_drop=3, base_accuracy=0.98)  # floor 95 %, within 3.5 ms: trials 2 and 3
    assert int(both.winner["number"]) == 3 and "most accurate (97.00%)" in both.why
    assert both.asked == {"latency_ms": 3.5, "max_drop_points": 3, "choose_by": "top1", "ranked_among": "Pareto"}
    # the floor is a float sum: 0.984 - 0.01 is 0.9739999..., and a variant at 97.4 % is within 1 point
    edge = front((1, 0.974, 1.0, 1.0), (2, 0.984, 2.0, 2.0))
    assert int(choose(edge, max_drop=1, base_accuracy=0.984).winner["number"]) == 1


def test_nothing_within_max_drop_names_the_most_accurate():
    from vitsearch.search.results.pick import choose

    with pytest.raises(NothingWithinBudget, match=r"within 0.5 val points of the uncompressed model \(99.00% val\); "
                                                  r"the most accurate is trial 4 at 4.000 ms"):
        choose(FRONT, max_drop=0.5, base_accuracy=0.99)
    with pytest.raises(NothingWithinBudget, match=r"within 0.5 ms with high probability and within 1 val point of.*the "
                                                  r"fastest is trial 1"):
        choose(FRONT, 0.5, max_drop=1, base_accuracy=0.98)


@pytest.mark.parametrize("kw", [{}, {"max_drop": -1, "base_accuracy": 0.9}, {"max_drop": 101, "base_accuracy": 0.9},
                                {"max_drop": float("nan"), "base_accuracy": 0.9}, {"max_drop": 1},
                                {"max_drop": 1, "base_accuracy": float("nan")},
                                {"latency_ms": 0}, {"latency_ms": -2}, {"latency_ms": float("nan")},
                                {"latency_ms": 5, "min_accuracy": 1.5}, {"latency_ms": 5, "max_size_mb": 0}])
def test_meaningless_budgets_are_refused(kw):
    from vitsearch.search.results.pick import choose

    with pytest.raises(ConfigError) as exc:
        choose(FRONT, **kw)
    assert exc.value.exit_code == 2


# ---- on a real run ---------------------------------------------------------------------------




def recorded_front(run_dir):
    """(the run, its front as ``pick --no-remeasure`` sees it: every ms on the report's basis, fastest first)."""
    from vitsearch.search.results.runview import load_run

    view = load_run(run_dir)
    return view, on_basis(view, view.front).sort_values("latency_ms")


def on_basis(view, front):
    """``front`` with every ms rebased as pick and the report state them (ratio x one uncompressed time)."""
    from vitsearch.search.results.basis import rebase, report_basis

    return rebase(front, report_basis(view.latency_records()))


def check_variant(out, number, view):
    """The variant dir is complete, loads with weights_only, and reproduces its recorded accuracy."""
    from vitsearch.evaluators import evaluate_accuracy, load_mnist5k
    from vitsearch.search.results.variant import load_variant

    for name in ("config.json", "weights.pt", "provenance.json", "study.yaml", "README.md"):
        assert (out / name).is_file(), name
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(type(t) is torch.Tensor for t in state.values())
    prov = json.loads((out / "provenance.json").read_text())
    ev = view.evaluation(number)
    assert prov["trial"] == number and prov["study"] == "t" and prov["base_model"] == "builtin:vitsearch-tiny"
    assert prov["device_fingerprint"]["fingerprint_id"] == ev["fingerprint"]["fingerprint_id"]
    assert prov["accuracy"]["recorded"] == ev["accuracy"] == prov["accuracy"]["at_export"]
    assert prov["latency"]["used_source"] and prov["latency"]["recorded"]["source"] == "measured"
    variant = load_variant(out)
    acc = evaluate_accuracy(variant.model, load_mnist5k(seed=0).val, "cpu", 500)
    assert acc.top1 == ev["accuracy"]  # CPU kernels are deterministic: exact, no tolerance
    ex = prov["export"]
    if ex["exported"]:
        program = torch.export.load(out / "program.pt2").module()
        x = torch.randn(*ex["input_shape"])
        with torch.inference_mode():
            assert torch.allclose(program(x), variant.model(x), atol=1e-4)
    else:
        assert ex["reason"] and "program.pt2" in (out / "README.md").read_text()
    return prov


@pytest.mark.slow
def test_pick_between_fastest_and_slowest_exports_a_loadable_variant(run_dir, tmp_path):
    from vitsearch.search.results.pick import choose
    from vitsearch.search.results.runview import Remeasure, front_latency

    view, fr = recorded_front(run_dir)
    highs = sorted(fr["latency_high_ms"])  # within the budget = the interval's high end within it
    budget = (highs[0] + highs[-1]) / 2 if len(fr) > 1 else highs[-1] * 1.01
    expected = choose(on_basis(view, front_latency(view, Remeasure(False, ""))), budget).winner
    out = tmp_path / "variant"
    proc = vitsearch("pick", run_dir, "--latency-ms", budget, "--no-remeasure", "--out", out, "--choose-by", "top1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"trial {int(expected['number'])} wins" in proc.stdout and "runner-up" in proc.stdout
    assert "as recorded" in proc.stdout
    check_variant(out, int(expected["number"]), view)


@pytest.mark.slow
def test_pick_by_default_chooses_the_variant_closest_to_the_teacher(run_dir, tmp_path):
    """Each front variant within the budget rebuilt and scored against the teacher on val in the study's runtime;
    the smallest KL wins, and the provenance records it and what ranked."""
    from vitsearch.search.results.closeness import teacher_kl
    from vitsearch.search.results.pick import choose
    from vitsearch.search.results.runview import Remeasure, front_latency
    from vitsearch.search.session import load_session

    view, _ = recorded_front(run_dir)
    within = on_basis(view, front_latency(view, Remeasure(False, "")))
    kl = teacher_kl(view, load_session(view.spec), within, say=lambda text: None)
    assert (kl >= 0).all() and len(kl) == len(within)  # 0 only for the uncompressed model, the teacher itself
    expected = choose(within, 1e6, closeness=lambda rows: kl[rows.index]).winner
    out = tmp_path / "variant"
    proc = vitsearch("pick", run_dir, "--latency-ms", 1e6, "--no-remeasure", "--polish-steps", 0, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    number = int(expected["number"])
    assert f"trial {number} wins: the closest to the teacher on val (KL {kl.min():.4f}" in proc.stdout
    assert proc.stdout.count("follows the teacher on val at KL") == len(within)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["asked"]["choose_by"] == "teacher" and prov["trial"] == number
    assert prov["accuracy"]["val_kl_at_choice"] == pytest.approx(kl.min())


@pytest.mark.slow
def test_pick_remeasures_on_the_study_device(run_dir):
    """With --json: one JSON record on stdout (speed-up and the paired test drop with their intervals), the rest
    on stderr; the drop pairs the exported weights with the uncompressed model on the same test images."""
    from vitsearch.evaluators.paired import paired_drop, unpack

    view, fr = recorded_front(run_dir)
    proc = vitsearch("pick", run_dir, "--latency-ms", 1e6, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "re-measured on this machine" in proc.stderr
    best = fr.sort_values(["accuracy", "latency_ms"], ascending=[False, True]).iloc[0]
    number = int(best["number"])
    assert f"trial {number} wins" in proc.stderr
    record = json.loads(proc.stdout)
    assert record["trial"] == number and record["runtime"] == "eager" and record["speedup"] > 0
    assert record["speedup_low"] <= record["speedup"] <= record["speedup_high"]
    assert record["paired_drop_low"] <= record["paired_drop"] <= record["paired_drop_high"]
    assert record["paired_drop"] == pytest.approx(record["base_test_accuracy"] - record["test_accuracy"])
    assert set(record["polish"]) == {"steps", "augment", "ema", "select", "kept"}  # how the exported weights were polished
    cache = json.loads((run_dir / "test_accuracy.json").read_text())
    base = unpack(cache["base"]["test_correct"], cache["base"]["test_n"])
    assert paired_drop(base, base).drop == 0 and record["test_n"] == cache["base"]["test_n"]
    prov = check_variant(run_dir / "variants" / f"trial-{number}", number, view)
    assert prov["latency"]["remeasured"]["n_runs"] >= 5
    assert prov["latency"]["used_source"] == "measured, re-measured here"
    assert prov["latency"]["used_high_ms"] >= prov["latency"]["used_ms"] and "probability" in prov["latency"]["used_within"]


@pytest.mark.slow
def test_pick_exit_codes(run_dir, capsys):
    code, err = refused(capsys, "pick", run_dir, "--latency-ms", 0)
    assert code == 2 and "--latency-ms: must be > 0, got 0" in err
    code, err = refused(capsys, "pick", run_dir, "--latency-ms", 1e-6, "--no-remeasure")
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "the fastest is trial" in err


@pytest.mark.slow
def test_pick_fastest_within_max_drop_on_a_real_run(run_dir, tmp_path, capsys):
    """--max-drop alone on a real run: the fastest front variant within that many val points of the uncompressed
    model's recorded val accuracy is exported, and the variant's record says what was asked."""
    from vitsearch.search.results.basis import report_basis

    view, fr = recorded_front(run_dir)
    drop = max(round(100 * (view.base_accuracy - fr["accuracy"].min()), 1), 0) + 0.1  # every front variant is within
    out = tmp_path / "fastest"
    proc = vitsearch("pick", run_dir, "--max-drop", drop, "--no-remeasure", "--polish-steps", 0, "--out", out,
                     "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    number = int(fr.iloc[0]["number"])  # the fastest on the recorded latencies
    assert f"trial {number} wins: the fastest of {len(fr)} Pareto variant(s) within {drop:g} val point" in proc.stderr
    record = json.loads(proc.stdout)
    asked = {"max_drop_points": drop, "base_val_accuracy": view.base_accuracy, "base_val_source": "recorded by the run",
             "latency_basis": report_basis(view.latency_records()).text()}
    assert record["trial"] == number and record["asked"] == asked
    assert json.loads((out / "provenance.json").read_text())["asked"] == asked
    # a drop nothing on the front meets (when the front's best val is below the uncompressed model's): exit 3
    if fr["accuracy"].max() < view.base_accuracy:
        code, err = refused(capsys, "pick", run_dir, "--max-drop", 0, "--no-remeasure")
        assert code == 3 and "the most accurate is trial" in err
    # a run that recorded no uncompressed val accuracy (its study sets no max_accuracy_drop): pick measures it
    import shutil

    bare = tmp_path / "bare-run"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("variants", "report*"))
    meta = json.loads((bare / "run.json").read_text())
    del meta["base_accuracy"]
    (bare / "run.json").write_text(json.dumps(meta))
    proc = vitsearch("pick", bare, "--max-drop", drop, "--no-remeasure", "--polish-steps", 0, "--out",
                     tmp_path / "from-bare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (f"uncompressed model: {view.base_accuracy:.2%} val, measured here in fp32 on cpu (the run recorded "
            "none: none in its run.json)") in proc.stdout  # CPU: exact
    assert f"trial {number} wins" in proc.stdout
    prov = json.loads((tmp_path / "from-bare" / "provenance.json").read_text())
    assert prov["asked"]["base_val_accuracy"] == view.base_accuracy
    assert prov["asked"]["base_val_source"] == "measured at pick (fp32 on cpu)"
    # ... unless this machine would deploy the uncompressed model in another precision than the run did
    (bare / "run.json").write_text(json.dumps({**meta, "base_precision": "bf16"}))
    code, err = refused(capsys, "pick", bare, "--max-drop", drop, "--no-remeasure", "--out", tmp_path / "never")
    assert code == 2 and "the run deployed the uncompressed model in bf16" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_quantized_variant_round_trips(builtin_model, mnist, tmp_path):
    """int8 (torchao) layers: the float state is stored, precision re-applied on load, outputs identical."""
    from vitsearch.search.study import load_study
    from vitsearch.search.results.variant import load_variant, write_variant
    from vitsearch.spaces import CompressionConfig, finalize, prepare

    config = CompressionConfig.from_dict({"depth": {"keep": 6}, "sparsity": {"mlp": "2:4"},
                                          "precision": {"attn": "int8", "mlp": "int8-weight"}})
    prepared = prepare(builtin_model, config, calibration=mnist.calibration)
    model = finalize(prepared, config)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(load_study("default").model_dump(mode="json")))
    out = write_variant(tmp_path / "v", prepared, config, study,
                        {"trial": 0, "study": "default", "config_summary": config.summary(), "base_model": "b",
                         "accuracy": {"recorded": 0.9, "source": "x", "at_export": 0.9},
                         "latency": {"used_ms": 1.0, "used_source": "measured"}, "size_mb": 1.0})
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(type(t) is torch.Tensor for t in state.values())
    loaded = load_variant(out).model
    x = mnist.val[0][0][None]
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    assert type(loaded.blocks[0].attn.qkv.weight) not in (torch.Tensor, torch.nn.Parameter)  # quantized again


def test_the_speedup_at_export_is_the_variant_timed_against_the_uncompressed_program(monkeypatch):
    """One interleaved measurement of the two programs (one sitting), not two timings divided."""
    from types import SimpleNamespace

    import vitsearch.evaluators.runtimes.deploy as deploy
    from vitsearch.search.results.export import side_by_side

    seen = {}

    def measure(variant, shape, device, **kw):
        seen.update(variant=variant, reference=kw["reference"], profile=kw["reference_ms_profile"], warmup=kw["warmup"],
                    sitting_sd=kw["sitting_sd"])
        return SimpleNamespace(ratio=0.5, ratio_low=0.4, ratio_high=0.625, confidence=0.95, n_runs=40)

    monkeypatch.setattr(deploy, "measure", measure)
    base = SimpleNamespace(as_module=lambda: "the uncompressed program")
    pipe = SimpleNamespace(input_shape=(1, 1, 28, 28), device="cpu",
                           timing=lambda: {"warmup": 7, "reference": "the eager model", "reference_ms_profile": 3.0})
    out = side_by_side(pipe, SimpleNamespace(runtime="onnxruntime"), base)
    assert seen["reference"] == "the uncompressed program" and seen["profile"] is None and seen["warmup"] == 7
    assert (out["speedup"], out["low"], out["high"]) == pytest.approx((2.0, 1.6, 2.5))
    assert "this sitting's alone" in out["how"]
    pipe.timing = lambda: {"warmup": 7, "sitting_sd": 0.05}  # a profile's spread: the measurement itself is raw
    wide = side_by_side(pipe, SimpleNamespace(runtime="onnxruntime"), base, sitting_sd=0.05)
    assert seen["sitting_sd"] is None and (wide["sitting_low"], wide["sitting_high"]) == pytest.approx((1.6, 2.5))
    assert wide["low"] < 1.6 and wide["high"] > 2.5 and "another sitting" in wide["how"]
