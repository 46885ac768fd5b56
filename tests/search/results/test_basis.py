"""One ms basis: every ms a run states is its ratio times one uncompressed time (search/results/basis.py)."""

import pandas as pd
import pytest


def test_one_ms_basis_for_every_sitting():
    """Two sittings of one variant, timed beside references of 6 and 5 ms, come out in one basis: their ms
    differ only by their ratios; a row without a ratio keeps its ms as timed."""
    from vitsearch.search.results.basis import rebase, report_basis

    records = [{"ratio": 0.5, "reference_ms_now": r, "reference_ms_profile": None} for r in (5.0, 6.0, 7.0)]
    basis = report_basis(records + [{}, {"median_ms": 3.0}])
    assert basis.reference_ms == 6.0 and "median over the 3 times" in basis.text()
    assert report_basis(records + [{"ratio": 0.4, "reference_ms_profile": 4.0}]).reference_ms == 4.0
    assert report_basis([{"median_ms": 3.0}]).reference_ms is None
    front = pd.DataFrame({"number": [7, 8], "latency_ratio": [0.70, None], "latency_ms": [4.2, 3.0],
                          "latency_low_ms": [3.9, 2.9], "latency_high_ms": [4.5, 3.1],
                          "remeasured_ratio": [0.72, None], "remeasured_ms": [3.6, 3.1],
                          "remeasured_low_ms": [3.5, 3.0], "remeasured_high_ms": [3.7, 3.2], "budget_ms": [3.6, 3.1]})
    out = rebase(front, basis)
    assert out["latency_ms"].tolist() == pytest.approx([0.70 * 6.0, 3.0])
    assert out["remeasured_ms"].tolist() == pytest.approx([0.72 * 6.0, 3.1])
    assert out["latency_high_ms"][0] == pytest.approx(4.5 * 0.7 * 6.0 / 4.2)  # the interval scales with its point
    assert out["latency_ms_as_timed"].tolist() == [4.2, 3.0] and out["speedup"][0] == pytest.approx(1 / 0.70)
    assert out["budget_ms"].tolist() == out["remeasured_ms"].tolist()  # decided on the re-measurement
    assert out["budget_high_ms"].tolist() == pytest.approx([3.7 * 0.72 * 6.0 / 3.6, 3.2])
    timed = report_basis([{"median_ms": 3.0}])  # a run that recorded no ratio (burst timings): ms as timed, said so
    assert timed.text().startswith("ms as timed (this run recorded no ratio") and "no speed-up" in timed.text()
    assert rebase(front, timed)["latency_ms"].tolist() == [4.2, 3.0]


def test_the_front_is_ordered_on_the_basis():
    """Trial 2 was timed faster (1.9 ms) only because its reference ran fast: on the basis it is slower than
    trial 1, so it is listed after it. Membership stays as the search judged it, on the values as timed
    (its rungs finished that front): trial 3, timed slower than 1 and less accurate, stays off though it is
    faster on the basis."""
    from vitsearch.search.results.basis import MsBasis, in_basis_order
    from vitsearch.search.results.tables import pareto_front

    frame = pd.DataFrame({"number": [1, 2, 3], "state": "COMPLETE", "feasible": True, "reused_from": None,
                          "accuracy": [0.98, 0.97, 0.96], "latency_ratio": [0.50, 0.52, 0.45],
                          "latency_ms": [2.00, 1.90, 2.10]}, index=[10, 11, 12])
    objectives = [("accuracy", "maximize"), ("latency_ms", "minimize")]
    assert pareto_front(frame, objectives)["number"].tolist() == [2, 1]  # as timed
    on_basis = in_basis_order(pareto_front(frame, objectives), MsBasis(4.0, "test"))
    assert on_basis["number"].tolist() == [1, 2]
    assert on_basis["latency_ms"].tolist() == [2.00, 1.90]  # the rows keep their ms as timed
    assert in_basis_order(pareto_front(frame, objectives), MsBasis(None, "no ratio"))["number"].tolist() == [2, 1]


def test_a_speed_up_outside_eager_is_over_the_uncompressed_model_in_that_runtime():
    """In ONNX Runtime every ratio is to the eager model timed beside it; the uncompressed model runs there at
    ratio 0.52 (trial 0), so a variant at ratio 0.175 is x2.97 faster than it, not x5.71; its interval carries the
    uncompressed model's own. A run that never timed the uncompressed model there gives no speed-up."""
    from vitsearch.search.results.basis import rebase, report_basis
    from vitsearch.search.results.page import speedup_cell

    def record(ratio, low, high):
        return {"ratio": ratio, "ratio_low": low, "ratio_high": high, "reference_ms_now": 4.0, "runtime": "onnxruntime"}

    base = record(0.52, 0.50, 0.54)
    basis = report_basis([base, record(0.175, 0.17, 0.18)], uncompressed=[base])
    assert basis.runtime == "onnxruntime" and basis.uncompressed_ratio == 0.52
    assert "speed-up over the uncompressed model in onnxruntime = its ratio, 0.520 [0.500, 0.540] (2.080 ms, " \
        "timed as trial 0), / the variant's" in basis.text() and "in eager PyTorch" in basis.text()
    front = pd.DataFrame({"number": [66], "latency_ratio": [0.175], "latency_ms": [0.7],
                          "latency_low_ms": [0.68], "latency_high_ms": [0.72]})
    out = rebase(front, basis)
    assert out["speedup"][0] == pytest.approx(0.52 / 0.175)
    row = out.iloc[0].to_dict()
    low, high = (0.52 / 0.175) * 0.7 / 0.72 * 0.50 / 0.52, (0.52 / 0.175) * 0.7 / 0.68 * 0.54 / 0.52
    assert speedup_cell(row) == f"x{0.52 / 0.175:.2f} [{low:.2f}, {high:.2f}]"
    untimed = report_basis([record(0.175, 0.17, 0.18)])
    assert untimed.uncompressed_ratio is None and "no speed-up over the uncompressed model in onnxruntime" \
        in untimed.text() and rebase(front, untimed)["speedup"].isna().all()
    started = report_basis([record(0.175, 0.17, 0.18)], run_start_ratio=0.55)  # a space without it: the run's start
    assert rebase(front, started)["speedup"][0] == pytest.approx(0.55 / 0.175) and "timed at the run's start" \
        in started.text() and "speedup_low_factor" not in rebase(front, started)
    no_ms = report_basis([{"ratio": 0.2, "runtime": "onnxruntime"}])  # ratios without a reference time: nothing
    assert no_ms.reference_ms is None and rebase(front, no_ms)["speedup"].isna().all()
    eager = report_basis([{"ratio": 0.5, "reference_ms_now": 4.0}])  # records before the runtime was written down
    assert eager.runtime == "eager" and rebase(front, eager)["speedup"][0] == pytest.approx(1 / 0.175)


def test_the_uncompressed_trial_is_found_in_the_study():
    """study_basis takes the uncompressed program's ratio from its own trial (fp32, or its base precision), not
    from a compressed one, nor from a trial without a record; in eager it reads no config."""
    import json

    import optuna

    from vitsearch.search.results.basis import study_basis
    from vitsearch.spaces import CompressionConfig

    def trial(config, ratio, runtime="onnxruntime"):
        latency = {"ratio": ratio, "ratio_low": ratio - 0.01, "ratio_high": ratio + 0.01, "reference_ms_now": 4.0,
                   "runtime": runtime} if ratio else {}
        return optuna.trial.create_trial(values=[0.9, 1.0], user_attrs={"config": config,
                                                                         "evaluation": {"latency": latency}})

    def study(*trials):
        s = optuna.create_study(directions=["maximize", "minimize"])
        for t in trials:
            s.add_trial(t)
        return s

    compressed = '{"schema_version": 1, "depth": {"keep": 6}}'
    assert study_basis(study(trial(compressed, 0.3), trial('{"schema_version": 1}', 0.5))).uncompressed_ratio == 0.5
    bf16 = json.dumps(CompressionConfig.reference("bf16").to_dict())  # as a bf16 study records its trial 0
    assert study_basis(study(trial(compressed, 0.3), trial(bf16, 0.6))).uncompressed_ratio == 0.6
    assert study_basis(study(trial("{}", None), trial(compressed, 0.3)), run_start_ratio=0.55).uncompressed_ratio == 0.55
    assert study_basis(study(trial("not json", 0.5, "eager"), trial(compressed, 0.3, "eager"))).uncompressed_ratio == 1.0
