"""`vitsearch pick` end to end: exit codes, re-measurement, and exported variants that load back, on one real
small run built once for the module (8 trials, one worker, Ray capped at 2 CPUs); the choice rules on synthetic
fronts are test_pick.py's."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from clitools import vitsearch


def refused(capsys, *argv) -> tuple[int, str]:
    """``vitsearch ARGV`` in this process, for a refusal (exit 2) or nothing within the budget (exit 3): its exit
    code and stderr (what a real process adds is test_command_input.py's)."""
    from vitsearch.search.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def recorded_front(run_dir):
    """(the run, its front as ``pick --no-remeasure`` sees it: every ms on the report's basis, fastest first)."""
    from vitsearch.search.results.runview import load_run

    view = load_run(run_dir)
    return view, on_basis(view, view.front).sort_values("latency_ms")


def on_basis(view, front):
    """``front`` with every ms rebased as pick and the report state them (ratio x one uncompressed time)."""
    from vitsearch.search.results.basis import rebase, report_basis
    from vitsearch.search.results.tables import latency_records

    return rebase(front, report_basis(latency_records(view.study)))


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
    assert set(record["polish"]) == {"steps", "augment", "ema", "select", "lr", "kept"}  # how the exported weights were polished
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
    from vitsearch.search.results.tables import latency_records

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
             "latency_basis": report_basis(latency_records(view.study)).text()}
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
