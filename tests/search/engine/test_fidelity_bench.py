"""bench-search's fidelity comparison (zero-shot / rungs / full at equal wall time) and its sampler additions.

The end-to-end test runs the real benchmark (two real time-budgeted `vitsearch run`
searches of the built-in model, real Ray capped at 2 CPUs) on a tiny study; the rest is
pure and takes well under a second.
"""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from clitools import SMALL_STUDY, vitsearch
from tinystudy import write_study

from vitsearch.search.engine.fidelity_bench import fidelity_spec, front_hypervolume, parse_fidelities
from vitsearch.search.engine.sampler_bench import trials_to_reach_random
from vitsearch.search.study import parse_study
from vitsearch.spaces.errors import ConfigError

#: clitools' small study (short interleaved timings, Ray capped at 2 CPUs) with tiny rungs and 2 workers
TINY = {
    **SMALL_STUDY,
    "recovery": {"rungs": [1, 3, 6], "reduction": 2, "batch_size": 16},
    "search": {"trials": 6, "workers": 2, "cpus": 2, "seed": 0, "storage": "sqlite:////tmp/shared.db"},
    # cheap knobs only: int8 at batch 1 is many times slower to time here (and settled as no gain anyway)
    "space": {"precision": {"attn": ["fp32"], "mlp": ["fp32"]}, "sparsity": {"attn": ["dense"]}},
}


def test_each_fidelity_is_the_study_with_its_recovery_and_the_time_budget():
    spec = parse_study(TINY)
    ladders = {f: fidelity_spec(spec, f, 2.5, 3, None).recovery.ladder for f in ("zero-shot", "rungs", "full")}
    assert ladders == {"zero-shot": (0,), "rungs": (1, 3, 6), "full": (6,)}
    for fid in ("zero-shot", "rungs", "full"):
        s = fidelity_spec(spec, fid, 2.5, 3, "random").search
        # every run its own storage (its run dir's SQLite), the budget and seed; the sampler overridable
        assert (s.time_budget_minutes, s.seed, s.storage, s.sampler, s.trials) == (2.5, 3, None, "random", 6)
        # what the benchmark writes is a valid study again
        assert parse_study(yaml.safe_load(yaml.safe_dump(fidelity_spec(spec, fid, 2.5, 3, None).model_dump(
            mode="json")))).recovery.ladder == ladders[fid]


def test_fidelity_names():
    assert parse_fidelities(" zero-shot, full") == ["zero-shot", "full"]
    for bad in ("zeroshot", "rungs,rungs", ","):
        with pytest.raises(ConfigError, match="--fidelity"):
            parse_fidelities(bad)


def test_front_hypervolume_against_one_reference_point():
    ref = {"test_accuracy": 0.9, "latency_ratio": 1.0}
    pts = [{"latency_ratio": 0.5, "test_accuracy": 0.95}, {"latency_ratio": 1.0, "test_accuracy": 0.99},
           {"latency_ratio": 0.8, "test_accuracy": 0.97}, {"latency_ratio": 0.3, "test_accuracy": 0.85}]
    # 0.5 x 0.05 (ratio 0.5, acc 0.95) + 0.2 x 0.02 more (ratio 0.8, acc 0.97); the uncompressed
    # model (ratio 1) and a point under the accuracy floor add nothing
    assert front_hypervolume(pts, ref) == pytest.approx(0.5 * 0.05 + 0.2 * 0.02)
    assert front_hypervolume([], ref) == 0.0


@pytest.mark.parametrize("runtime, uncompressed", [("eager", 1.0), ("onnxruntime", 0.5)])
def test_front_points_are_ratios_to_the_uncompressed_model_in_the_runtime(tmp_path, runtime, uncompressed):
    """Every ratio is timed against the eager model; in ONNX Runtime, where the uncompressed program runs at 0.5
    of it (trial 0), a variant at 0.2 is at 0.4 of the uncompressed model there: the hypervolume's axis."""
    import pandas as pd

    from vitsearch.search.engine.fidelity_bench import front_points
    from vitsearch.search.study import study_to_yaml

    (tmp_path / "study.yaml").write_text(study_to_yaml(parse_study({"latency": {"runtime": runtime}})))
    trials = pd.DataFrame({"number": [0, 1, 2], "config": ['{"schema_version": 1}', None,  # 1: asked, never drawn
                                                           '{"schema_version": 1, "depth": {"keep": 4}}'],
                           "latency_ratio": [0.5 if runtime != "eager" else 1.01, None, 0.2],
                           "latency_ms": [2.0, None, 0.8], "latency_source": "measured",
                           "summary": ["identity", None, "depth 4"]})
    trials.to_parquet(tmp_path / "trials.parquet")
    summary = {"reference": {"latency_ms": 2.0, "latency_ratio": 0.55},
               "pareto_test": [{"number": n, "rung": 0, "accuracy": 0.9} for n in (0, 2)]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    points = {p["number"]: p for p in front_points(tmp_path)}
    assert points[0]["latency_ratio"] == 1.0 and points[2]["latency_ratio"] == pytest.approx(0.2 / uncompressed)
    assert ("eager model / the uncompressed program's in onnxruntime (0.500)" in points[2]["latency_ratio_how"]) \
        == (runtime != "eager")
    if runtime != "eager":  # no ratio of the uncompressed program recorded: latency over its run-start timing
        trials.drop(index=0).to_parquet(tmp_path / "trials.parquet")
        (tmp_path / "summary.json").write_text(json.dumps({**summary, "reference": {"latency_ms": 2.0},
                                                           "pareto_test": summary["pareto_test"][1:]}))
        assert front_points(tmp_path, runtime)[0]["latency_ratio"] == pytest.approx(0.8 / 2.0)


def test_trials_to_reach_random():
    curves = {"random": {0: [0.0, 0.1, 0.2, 0.4], 1: [0.0, 0.2, 0.2, 0.2]},  # mean at the end: 0.3
              "tpe": {0: [0.0, 0.3, 0.5, 0.5], 1: [0.1, 0.1, 0.1, 0.2]}}
    got = trials_to_reach_random(curves, 4)
    assert got["target"] == pytest.approx(0.3)
    assert got["tpe"] == {"mean_curve": 3, "per_seed": {0: 2, 1: None}}
    assert got["random"]["mean_curve"] == 4


def test_gp_sampler_takes_constrained_multi_objective_trials():
    """Optuna's GPSampler (search.sampler: gp) models two objectives and a constraint past its start-up."""
    from vitsearch.search.engine.plan import make_sampler

    spec = parse_study({**TINY, "search": {"sampler": "gp", "trials": 10, "seed": 0}})
    sampler = make_sampler(spec, 10)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = {"depth": optuna.distributions.CategoricalDistribution([4, 5, 6, 7, 8]),
             "kv": optuna.distributions.CategoricalDistribution([1, 2, 4])}
    for _ in range(8):  # 5 start-up trials, then the GP's own proposals
        trial = study.ask(dists)
        acc = 0.9 + 0.01 * trial.params["depth"] + 0.005 * trial.params["kv"]
        trial.set_constraint("accuracy", 0.96 - acc)
        study.tell(trial, [acc, float(trial.params["depth"])])
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 8


def test_startup_trials_of_tpe_and_gp():
    """search.startup_trials sets the random start of TPE and GP; without it a fifth of the trials (>= 5), for
    TPE at most 10 (measured: it reached random search's 200-trial hypervolume sooner)."""
    from vitsearch.search.engine.plan import make_sampler

    for name, at_200 in (("tpe", 10), ("gp", 40)):
        assert make_sampler(parse_study({**TINY, "search": {"sampler": name}}), 200)._n_startup_trials == at_200
        assert make_sampler(parse_study({**TINY, "search": {"sampler": name}}), 40)._n_startup_trials == 8
        assert make_sampler(parse_study({**TINY, "search": {"sampler": name}}), 10)._n_startup_trials == 5
        spec = parse_study({**TINY, "search": {"sampler": name, "startup_trials": 12}})
        assert make_sampler(spec, 200)._n_startup_trials == 12


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_fidelity_bench_end_to_end(tmp_path):
    """Two fidelities, one seed, 0.3 min each: every front point on test, one reference point, nothing RUNNING."""
    study = write_study(tmp_path / "study.yaml", TINY)
    out = tmp_path / "bench"
    proc = vitsearch("bench-search", study, "--fidelity", "zero-shot,rungs", "--wall-minutes", "0.3", "--seeds", "1",
                     "--out", out, timeout=1100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zero-shot" in proc.stdout and "vs zero-shot" in proc.stdout
    s = json.loads((out / "bench_fidelity.json").read_text())
    ref = s["reference_point"]
    base = ref["base_test"]
    assert ref["latency_ratio"] == 1.0 and ref["test_accuracy"] == pytest.approx(base["test_accuracy"] - 0.05)
    assert set(s["hypervolume"]) == {"zero-shot", "rungs"} and len(s["runs"]) == 2
    for fid, row in s["hypervolume"].items():
        assert row["n"] == 1 and row["mean"] >= 0 and row["steps"] == {"zero-shot": [0], "rungs": [1, 3, 6]}[fid]
    for run in s["runs"]:
        assert run["exit_code"] == 0 and run["stopped_at_time_budget"] is True, run
        assert run["evaluated"] >= 1 and run["front"]
        assert run["rungs"] == {"zero-shot": [0], "rungs": [1, 3, 6]}[run["fidelity"]]
        for p in run["front"]:  # every front point re-measured on test, with its interval
            assert p["test_accuracy"] is not None and p["test_lo"] <= p["test_accuracy"] <= p["test_hi"]
            assert 0 < p["latency_ratio"]
        # the one reference point is what every run's hypervolume was computed against
        assert run["hypervolume"] == pytest.approx(front_hypervolume(run["front"], ref))
        # the time stop settled everything: no trial left RUNNING, each run its own storage
        st = optuna.load_study(study_name="t", storage=f"sqlite:///{run['run_dir']}/optuna.db")
        assert st.trials and not [t for t in st.trials if t.state.name == "RUNNING"]
        # WAITING only for presets enqueued at the start and never handed out (a resume would take them)
        assert all("fixed_params" in t.system_attrs and not t.user_attrs for t in st.trials if t.state.name == "WAITING")
        assert json.loads((tmp_path / "bench" / "runs" / f"{run['fidelity']}-seed0" / "summary.json").read_text())[
            "time_budget_minutes"] == 0.3
    zs, rg = s["hypervolume"]["zero-shot"]["mean"], s["hypervolume"]["rungs"]["mean"]
    assert s["ratio_rungs_vs_zero_shot"] == (pytest.approx(rg / zs) if zs else None)
