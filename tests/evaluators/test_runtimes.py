"""The runtime layer on the built-in model: ONNX Runtime and torch.compile for real.

Every knob exports and runs in ONNX Runtime matching eager; ORT's own quantisation lands
on exactly the parts the config names, and its programs are checked against the eager
model quantised the same way (a faithful int8 program passes, a wrong one fails with the
figures); fingerprints name the runtime.
"""

from __future__ import annotations

import sys

import pytest
import torch

from vitsearch.evaluators.runtimes import NumericsMismatch, check_runtime, get_runtime, runtime_names
from vitsearch.evaluators.runtimes.deploy import build_checked, measure, runtime_fingerprint
from vitsearch.evaluators.runtimes.numerics import (accuracy_in_runtime, calibration_images, check_numerics,
                                                   reference_model)
from vitsearch.evaluators.runtimes.base import float_structure
from vitsearch.evaluators.runtimes.support import (PRECISION, check_config, knob_table, precisions,
                                                   runtime_space)
from vitsearch.spaces import CompressionConfig, SpaceSpec, prepare, supported_precisions
from vitsearch.spaces.errors import ConfigError, DeviceError

SHAPE = (1, 1, 28, 28)
CPU = torch.device("cpu")


def _build(runtime, base, mnist, cfg: dict):
    config = CompressionConfig.from_dict(cfg)
    prepared = prepare(base, float_structure(config), calibration=mnist.calibration)
    return (*build_checked(runtime, prepared, config, SHAPE, CPU, 1, mnist.calibration), prepared, config)


def test_registry_matches_the_study_schema():
    from typing import get_args

    from vitsearch.search.study import LatencySection

    assert set(runtime_names()) == set(get_args(LatencySection.model_fields["runtime"].annotation))
    with pytest.raises(ConfigError, match="'tvm' is not a runtime; expected one of eager, compile"):
        get_runtime("tvm")


def test_eager_rows_of_the_table_are_what_the_precision_knob_runs():
    assert precisions("eager", "cpu") == supported_precisions("cpu")
    assert set(precisions("eager", "cuda")) == set(supported_precisions("cuda"))
    table = knob_table()
    assert table.count("\n") == 2 + 6 + 2 + 4 - 1 and "MatMulNBits" in table


def test_unavailable_runtimes_are_one_line_errors(monkeypatch):
    with pytest.raises(DeviceError, match="'tensorrt' cannot be used: it runs on CUDA GPUs only") as err:
        check_runtime("tensorrt", "cpu")
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the package "is not installed"
    with pytest.raises(ConfigError, match=r"pip install onnx onnxruntime onnxscript"):
        check_runtime("onnxruntime", "cpu")


def test_knobs_a_runtime_cannot_realise_are_refused_or_left_out():
    with pytest.raises(ConfigError, match=r"precision.mlp: 'fp16' cannot run in runtime 'onnxruntime' on cpu: "
                                          r"ONNX Runtime's CPU provider has no fp16"):
        check_config("onnxruntime", "cpu", CompressionConfig.from_dict({"precision": {"mlp": "fp16"}}))
    explicit = SpaceSpec.model_validate({"precision": {"attn": ["fp32", "bf16"]}})
    with pytest.raises(ConfigError, match="space.precision.attn: 'bf16' cannot run in runtime 'onnxruntime'"):
        runtime_space(explicit, "onnxruntime", "cpu")
    space, notes = runtime_space(SpaceSpec(), "onnxruntime", "cuda")  # table logic only: no GPU needed
    assert space.precision.attn == ["fp32"] and len(notes) == 2 and "'int8' left out" in notes[0]
    assert runtime_space(SpaceSpec(), "onnxruntime", "cpu") == (SpaceSpec(), [])
    assert "int4-weight" in precisions("onnxruntime", "cpu") and "int4-weight" not in precisions("eager", "cpu")


STRUCTURAL = [
    {"depth": {"keep": 6}, "heads": {"kv_heads": 2},
     "tokens": {"method": "merge", "schedule": {"1": 0.7, "3": 0.7}},
     "sparsity": {"attn": "2:4", "mlp": "structured:0.5"}},
    {"heads": {"keep": 4}, "tokens": {"method": "prune", "schedule": {"2": 0.5}},
     "sparsity": {"mlp": "unstructured:0.5"}},
]


@pytest.mark.parametrize("cfg", STRUCTURAL, ids=["depth-gqa-merge-2:4-structured", "heads-prune-unstructured"])
def test_structural_knobs_export_and_match_eager_in_onnxruntime(builtin_model, mnist, cfg):
    deployed, numerics, prepared, config = _build("onnxruntime", builtin_model, mnist, cfg)
    assert deployed.provider == "CPUExecutionProvider" and deployed.artifact
    assert numerics["top1_agreement"] == 1.0 and numerics["max_rel_logit_diff"] < 1e-4
    x = torch.randn(3, *SHAPE[1:])  # a static batch-1 program run on 3 images, chunk by chunk
    with torch.inference_mode():
        assert torch.allclose(deployed(x), reference_model(prepared, config, CPU)(x), atol=1e-4)


def test_ort_quantises_exactly_the_parts_named_and_accuracy_is_measured_in_ort(builtin_model, mnist):
    import onnx

    deployed, numerics, prepared, config = _build(
        "onnxruntime", builtin_model, mnist, {"precision": {"attn": "int8", "mlp": "int4-weight"}})
    ops = [n.op_type for n in onnx.load_from_string(deployed.artifact).graph.node]
    assert ops.count("MatMulInteger") == 16 and ops.count("MatMulNBits") == 16  # 8 blocks x 2 linears each
    assert "4-bit" in deployed.realised["precision.mlp"] and "quantize_dynamic" in deployed.realised["precision.attn"]
    assert numerics["precision"] == "int8" and numerics["tolerance_rel"] == 0.12  # the loosest part's, like with like
    assert 0 < numerics["max_rel_logit_diff"] < 0.02
    assert get_runtime("onnxruntime").changes_numerics(config)
    val = torch.utils.data.Subset(mnist.val, range(200))
    ort_acc = accuracy_in_runtime(deployed, val, 64, "val")
    eager_acc = accuracy_in_runtime(get_runtime("eager").deploy(prepared, float_structure(config, keep_half=False),
                                                               torch.zeros(SHAPE), None), val, 64, "val")
    assert "run in onnxruntime" in ort_acc.source and ort_acc.n == 200
    assert abs(ort_acc.top1 - eager_acc.top1) <= 0.03


def test_a_numerics_mismatch_fails_with_the_figures(builtin_model, mnist):
    deployed, _, prepared, config = _build("onnxruntime", builtin_model, mnist, {"depth": {"keep": 6}})
    wrong = reference_model(prepared, config, CPU)
    with torch.no_grad():
        wrong.head.weight.mul_(-1.0)  # a reference the program does not compute
    images = torch.stack([mnist.calibration[i][0] for i in range(32)])
    with pytest.raises(NumericsMismatch, match=r"top-1 agreement .* max logit difference .*\(allowed 0.1% for fp32\)"):
        check_numerics(deployed, wrong, images, config)


#: the default study's config that failed the old check (against fp32) four times
MERGED_INT8 = {"depth": {"keep": 4}, "sparsity": {"mlp": "structured:0.5"},
               "tokens": {"method": "merge", "schedule": {"2": 0.5}}, "precision": {"attn": "int8"}}


def _zero_fc2_of_block_1(model):
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight.zero_()


def _drop_block_2(model):
    del model.blocks[2]


def test_a_faithful_int8_program_passes_and_a_planted_wrong_one_fails(builtin_model, mnist):
    """ORT's int8 program is held to the candidate quantised alike in torch, far tighter than int8 moves the
    float logits; a program that lost a layer's weights or a block (a bad export) fails that check."""
    import copy

    from vitsearch.evaluators.distill import distilled

    config = CompressionConfig.from_dict(MERGED_INT8)
    # as its first rung left it, at the lr this test's margins were set on (at 5e-4 int8 moves the logits
    # 6.5 %, the check's deviation 0.57 %: still 11x, but the 0.1 below would not hold)
    prepared = distilled(builtin_model, float_structure(config), mnist.train, steps=10, lr=1e-4,
                         calibration=mnist.calibration)
    deployed, numerics = build_checked("onnxruntime", prepared, config, SHAPE, CPU, 1, mnist.calibration)
    assert "attn linears quantised as onnxruntime quantises them" in numerics["reference"]
    assert numerics["top1_agreement"] >= 0.98 and numerics["max_rel_logit_diff"] < 0.01 < numerics["tolerance_rel"]
    reference, images = reference_model(prepared, config, CPU), calibration_images(mnist.calibration)
    with torch.inference_mode():
        float_logits, program_logits = reference(images), deployed(images)
    moved = float((program_logits - float_logits).abs().max() / float_logits.abs().max())
    assert moved > 0.1 > 10 * numerics["max_rel_logit_diff"]  # int8 moves the float logits far more than that
    for plant in (_zero_fc2_of_block_1, _drop_block_2):
        wrong = copy.deepcopy(prepared)
        plant(wrong)
        program = get_runtime("onnxruntime").deploy(wrong, config, torch.zeros(SHAPE), 1)
        with pytest.raises(NumericsMismatch, match=r"max logit difference .* \(allowed 12.0% for int8; beyond it on"):
            check_numerics(program, reference, images, config)


def test_weight_only_programs_are_checked_against_the_same_blocks(builtin_model, mnist):
    """8-bit and 4-bit MatMulNBits weights: the torch blocks match ORT's to float rounding."""
    weight_only = {"precision": {"attn": "int4-weight", "mlp": "int8-weight"}}
    numerics = _build("onnxruntime", builtin_model, mnist, weight_only)[1]
    assert numerics["top1_agreement"] == 1.0 and numerics["max_rel_logit_diff"] < 1e-3
    assert numerics["tolerance_rel"] == 0.02


def test_fingerprint_names_the_runtime_and_timing_takes_the_callable(builtin_model, mnist):
    eager = runtime_fingerprint("cpu", 1, "eager")
    ort = runtime_fingerprint("cpu", 1, "onnxruntime")
    assert "runtime" not in eager and ort["runtime"] == "onnxruntime" and ort["runtime_version"]
    assert ort["fingerprint_id"] != eager["fingerprint_id"]
    deployed, *_ = _build("onnxruntime", builtin_model, mnist, {})
    result = measure(deployed, SHAPE, "cpu", threads=1, warmup=2, min_runs=5, max_runs=10, lock=False)
    assert result.fingerprint_id == ort["fingerprint_id"] and result.n_runs >= 5


def test_compile_runtime_compiles_once_for_a_static_shape(builtin_model, mnist):
    deployed, numerics, *_ = _build("compile", builtin_model, mnist, {"depth": {"keep": 4}})
    assert deployed.batch == 1 and deployed.provider == "inductor" and deployed.build_seconds > 0
    assert numerics["top1_agreement"] == 1.0 and numerics["max_rel_logit_diff"] < 1e-3
    assert ("compile", "cpu") in PRECISION


def test_with_token_merging_one_image_whose_matching_flipped_does_not_fail_the_program(builtin_model, mnist):
    """The default ORT study's trial 74 (2026-12-06): 63 of 64 images within 0.6 % of the reference, one at 36 %
    (top-1 still agreeing): a flipped merge, not a wrong program. One such image of 64 passes; two do not, nor
    one without token reduction."""
    from vitsearch.evaluators.runtimes.base import Deployed
    from vitsearch.evaluators.runtimes.numerics import same_scheme

    images = calibration_images(mnist.calibration)[:64]
    for cfg, far, fails in ((MERGED_INT8, 1, False), (MERGED_INT8, 2, True),
                            ({k: v for k, v in MERGED_INT8.items() if k != "tokens"}, 1, True)):
        config = CompressionConfig.from_dict(cfg)
        prepared = prepare(builtin_model, float_structure(config), calibration=mnist.calibration)
        reference = reference_model(prepared, config, CPU)
        quantised, _ = same_scheme(reference, "onnxruntime", config)

        class Flipped(torch.nn.Module):
            def forward(self, x):
                out = quantised(x).clone()
                out[:far] += 0.36 * out.abs().max()  # these images' logits moved far, top-1 kept
                return out

        program = Deployed("onnxruntime", "test", Flipped(), CPU, 64, 0.0)
        if fails:
            with pytest.raises(NumericsMismatch, match=r"max logit difference"):
                check_numerics(program, reference, images, config)
        else:
            figures = check_numerics(program, reference, images, config)
            assert figures["images_over_tolerance"] == 1 == figures["images_over_allowed"]
