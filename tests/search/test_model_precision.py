"""``model.precision``: the uncompressed model as a study deploys it, the reference of every ratio (#23 item 8).

On CPU a study defaults to fp32 (nothing changes); a GPU study to bf16 (what a GPU user
deploys: an fp32 reference inflates every knob's speed-up). bf16 runs on CPU too, which is
how these tests exercise the GPU default without a GPU.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from tinystudy import tiny_study_dict

from vitsearch.search.study import parse_study, study_document, study_to_yaml
from vitsearch.spaces import CompressionConfig, ConfigError

FAST = {"interleave": {"chunk": 2, "min_pairs": 3, "max_seconds": 0.3}}
BF16 = tiny_study_dict(model={"precision": "bf16"}, latency=FAST)


def test_auto_is_bf16_on_cuda_in_every_runtime_that_runs_it_and_fp32_on_cpu():
    from vitsearch.search.preflight import study_base_precision

    auto = parse_study({})
    assert study_base_precision(auto, "cpu") == "fp32"
    assert study_base_precision(auto, "cuda") == "bf16" and study_base_precision(auto, "cuda:1") == "bf16"
    ort = parse_study({"latency": {"runtime": "onnxruntime"}})
    assert study_base_precision(ort, "cuda") == "fp16"  # ORT's CUDA provider lacks bf16 kernels
    assert study_base_precision(parse_study({"model": {"precision": "bf16"}}), "cpu") == "bf16"


def test_a_precision_the_runtime_cannot_run_is_refused_in_one_line():
    from vitsearch.search.preflight import check_study_runtime

    spec = parse_study({"model": {"precision": "bf16"}, "latency": {"runtime": "onnxruntime"}})
    with pytest.raises(ConfigError, match=r"^model.precision: 'bf16' cannot run in runtime 'onnxruntime' on cpu: "
                                          r"ONNX Runtime's CPU provider has no bf16 kernels; accepted there: auto, "
                                          r"fp32$"):
        check_study_runtime(spec, "cpu")
    with pytest.raises(ConfigError, match=r"model.precision.*'int8'"):
        parse_study({"model": {"precision": "int8"}})


def test_a_study_left_at_auto_dumps_as_before_and_a_set_one_is_written():
    import yaml

    assert "precision" not in yaml.safe_load(study_to_yaml(parse_study({})))["model"]
    assert yaml.safe_load(study_to_yaml(parse_study({"model": {"precision": "bf16"}})))["model"]["precision"] == "bf16"


def test_a_bf16_study_measures_and_scores_against_the_model_in_bf16(tmp_path):
    from vitsearch.search.session import load_session

    session = load_session(parse_study(BF16))
    assert session.base_precision == "bf16"
    assert session.reference_config == CompressionConfig.reference("bf16")
    assert {p.dtype for p in session.reference.parameters()} == {torch.bfloat16}
    assert session.latency_kwargs()["reference"] is session.reference  # the other side of every interleaving
    pipe = session.pipeline
    assert pipe.reference == session.reference_config and pipe.is_uncompressed(session.reference_config)
    # the uncompressed model is never distilled (it is the teacher), and it is scored as deployed: in bf16
    metrics, reason = pipe.evaluate(session.reference_config, steps=10)
    assert reason is None and metrics["recovery_steps"] == 0 and metrics["latency"].get("ratio")
    from vitsearch.evaluators import Evaluation

    assert metrics["latency"]["reference_precision"] == "bf16"  # every printed ratio says what it is to
    assert "to the uncompressed model in bf16 x" in "\n".join(Evaluation.from_dict(metrics).summary_lines())
    fp32 = load_session(parse_study(tiny_study_dict(latency=FAST)))
    assert fp32.reference is fp32.base and fp32.reference_config == CompressionConfig()
    acc32, _ = fp32.pipeline.accuracy(fp32.base, CompressionConfig(), fp32.data.val, "val")
    assert abs(metrics["accuracy"] - acc32.top1) <= 0.01  # bf16 rounds, it does not retrain
    assert metrics["size_mb"] < 0.6 * fp32.pipeline.costs(CompressionConfig())["size_mb"]  # 2 bytes a weight


def test_a_predictor_profiled_against_fp32_is_refused_for_a_bf16_study():
    from vitsearch.evaluators.latency.predict.base import LatencyPredictor

    old = SimpleNamespace(state={"reference_ms": 1.0})  # written before model.precision: fp32
    LatencyPredictor.check_base_precision(old, "fp32")
    with pytest.raises(ConfigError, match=r"profiled against the uncompressed model in fp32, but the study deploys "
                                          r"it in bf16 \(model.precision\)"):
        LatencyPredictor.check_base_precision(old, "bf16")


def test_a_profile_dir_of_another_base_precision_is_refused(tmp_path):
    from vitsearch.evaluators.latency.profile.context import ProfileContext
    from vitsearch.search.session import load_session

    ProfileContext.of(load_session(parse_study(tiny_study_dict())), tmp_path / "p")  # writes meta.json (fp32)
    with pytest.raises(ConfigError, match=r"was measured for base_precision 'fp32', this study has 'bf16'"):
        ProfileContext.of(load_session(parse_study(BF16)), tmp_path / "p")


def test_a_bf16_study_read_from_its_file_and_from_its_run_dir_chooses_bf16_not_fp32(tmp_path):
    """The precision choices a study leaves at their default follow its base precision, whether the study is parsed,
    read from a file (its paths resolved), read back from a run dir's study.yaml (a resumed run, report, pick) or
    parsed from its document."""
    import yaml

    from vitsearch.search.preflight import runtime_search_space
    from vitsearch.search.session import load_session
    from vitsearch.search.study import load_study

    path = tmp_path / "bf16.yaml"
    path.write_text(yaml.safe_dump(BF16))
    from_file = load_study(path)
    run_dir_file = tmp_path / "run-study.yaml"
    run_dir_file.write_text(study_to_yaml(from_file))
    session = load_session(parse_study(BF16))
    # (study_document: what a benchmark edits to derive a study from another)
    for spec in (parse_study(BF16), from_file, load_study(run_dir_file), parse_study(study_document(from_file))):
        space, notes = runtime_search_space(spec, session.base, "cpu", session.data.calibration)
        choices = {name: tuple(d.choices) for name, d in space.distributions().items() if name.startswith("precision")}
        assert choices and all(set(c) == {"bf16", "int8"} for c in choices.values()), choices
    assert (load_study(run_dir_file).model_dump(exclude={"output_dir"})
            == from_file.model_dump(exclude={"output_dir"}))  # what a resume compares
    from vitsearch.evaluators.runtimes.support import runtime_space

    from vitsearch.evaluators.runtimes.support import runtime_search_space
    from vitsearch.search.engine.sharing import study_fingerprint

    trimmed, notes = runtime_space(load_study(run_dir_file).space, "tensorrt", "cuda")  # table logic only: no GPU
    assert "'int8' left out" in notes[0]  # a default the runtime cannot run is left out with a note, not refused
    assert trimmed.precision.model_fields_set == set()  # and what is left is still the default: the base
    space, _ = runtime_search_space(load_study(run_dir_file).space, session.base, "tensorrt", "cuda",
                                    base_precision="bf16")
    assert {v for config in space.presets() for _, v in config.precision.named_values()} == {"bf16"}  # never fp32
    # drivers of one shared study compare the choices they search: a run dir of before (fp32 written) differs
    explicit = parse_study({**BF16, "space": {"precision": {"attn": ["fp32", "int8"], "mlp": ["fp32", "int8"]}}})
    assert study_fingerprint(from_file)["space"]["precision"] == {"attn": ["bf16", "int8"], "mlp": ["bf16", "int8"]}
    assert study_fingerprint(explicit) != study_fingerprint(from_file)
    assert study_fingerprint(parse_study({}))["space"]["precision"]["attn"] == ["fp32", "int8"]  # fp32: as before
    given = tmp_path / "given.yaml"  # choices the file gives stay given, through the run dir too
    given.write_text(yaml.safe_dump({**BF16, "space": {**BF16.get("space", {}), "precision": {"attn": ["fp32"]}}}))
    (tmp_path / "given-run.yaml").write_text(study_to_yaml(load_study(given)))
    assert load_study(tmp_path / "given-run.yaml").space.precision.model_fields_set == {"attn"}


def test_a_driver_searching_other_default_precisions_than_its_shared_study_is_told_why():
    import optuna

    from vitsearch.search.engine.sharing import STUDY_ATTR, check_same_study, study_fingerprint

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="default")
    bf16 = parse_study({"model": {"precision": "bf16"}})
    older = study_fingerprint(bf16)  # what a version before this one stored for the same file: fp32 defaults
    older["space"]["precision"] = {"attn": ["fp32", "int8"], "mlp": ["fp32", "int8"]}
    study.set_user_attr(STUDY_ATTR, older)
    with pytest.raises(ConfigError, match=r"other precision choices \(space.precision.attn: "
                                          r"\['fp32', 'int8'\] vs \['bf16', 'int8'\]\): this driver searches the "
                                          r"default ones in its base precision bf16 \(model.precision bf16"):
        check_same_study(storage, bf16)
    written = parse_study({"model": {"precision": "bf16"}, "space": {"precision": older["space"]["precision"]}})
    check_same_study(storage, written)  # choices written out are searched as written: the same study
    given = parse_study({"model": {"precision": "bf16"}, "space": {"precision": {"attn": ["int8"]}}})
    with pytest.raises(ConfigError, match="different study file"):  # the difference is in a part it wrote
        check_same_study(storage, given)
    with pytest.raises(ConfigError, match="different study file"):
        check_same_study(storage, parse_study({"model": {"precision": "bf16"}, "recovery": {"seed": 3}}))


@pytest.mark.parametrize("space", [{}, {"precision": {"attn": ["fp32", "int8"], "mlp": ["fp32", "int8"]}}],
                         ids=["default-choices", "written-choices"])
def test_drivers_of_one_study_that_find_a_cpu_and_a_gpu_are_refused(monkeypatch, space):
    """``device: auto`` resolves per machine: a driver that found a GPU beside one that found the CPU would put
    latencies of two devices (and two base precisions) into one study: refused in one line, whichever came first,
    even when the file writes every precision choice (then the choices alone do not differ)."""
    import optuna

    from vitsearch.evaluators.latency import fingerprint
    from vitsearch.search.engine.sharing import STUDY_ATTR, check_same_study, study_fingerprint

    spec = parse_study({"device": "auto", "space": space})

    def found(kind: str) -> None:  # what device: auto finds on this machine, whatever this machine has
        device = torch.device("cuda", 0) if kind == "cuda" else torch.device("cpu")  # as resolve_device names them
        monkeypatch.setattr(fingerprint, "resolve_device", lambda _: device)

    found("cpu")
    on_cpu = study_fingerprint(spec)
    assert on_cpu["device"] == "auto"  # a driver on the CPU fingerprints as before
    found("cuda")
    on_gpu = study_fingerprint(spec)
    assert on_gpu["device"] == "auto:cuda"  # not the fingerprint of a file that writes device: cuda
    for stored, kind, message in ((on_cpu, "cuda", "run on the CPU and this driver runs it on cuda (device: auto)"),
                                  (on_gpu, "cpu", "run on cuda and this driver runs it on the CPU (device: auto)")):
        storage = optuna.storages.InMemoryStorage()
        optuna.create_study(storage=storage, study_name=spec.name).set_user_attr(STUDY_ATTR, stored)
        found(kind)
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_same_study(storage, spec)
        found("cpu" if kind == "cuda" else "cuda")
        check_same_study(storage, spec)  # two drivers on one kind of device: the same study
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name=spec.name).set_user_attr(STUDY_ATTR, on_gpu)
    for device in ("cuda", "cpu"):  # a file that names the device is another file
        with pytest.raises(ConfigError, match="different study file"):
            check_same_study(storage, parse_study({"device": device, "space": space}))
