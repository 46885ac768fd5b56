"""Per-block precision in the runtime layer: refusals name the entry, ORT quantises exactly the blocks named.

The support table checks every entry of a per-block part; eager's realised text names
the blocks; the float structure maps entry by entry; ONNX Runtime's export quantises
the MatMul nodes of exactly the blocks whose entry asks, and the program passes the
numerics check against the eager model quantised alike.
"""

from __future__ import annotations

import ast
import re

import pytest
import torch

from vitsearch.evaluators.fakequant import fake_quantised, scheme_for
from vitsearch.evaluators.runtimes import get_runtime
from vitsearch.evaluators.runtimes.base import float_structure
from vitsearch.evaluators.runtimes.deploy import build_checked
from vitsearch.evaluators.runtimes.eager import eager_realises, realised_precision
from vitsearch.evaluators.runtimes.numerics import tolerance
from vitsearch.evaluators.runtimes.onnxexport import quantised_like_ort
from vitsearch.evaluators.runtimes.support import PRECISION, check_config
from vitsearch.spaces import CompressionConfig, finalize, prepare
from vitsearch.spaces.errors import ConfigError

SHAPE = (1, 1, 28, 28)
MLP = ["int8", "fp32", "int8", "fp32", "fp32", "int8", "fp32", "fp32"]  # the built-in model's 8 blocks
ATTN = ["fp32", "int4-weight", "fp32", "int4-weight", "fp32", "fp32", "fp32", "fp32"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_entry_a_runtime_cannot_realise_is_refused_by_its_index():
    config = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "fp32", "int4-weight", "fp32"] * 2}})
    with pytest.raises(ConfigError, match=r"precision.mlp\[2\]: 'int4-weight' cannot run in runtime 'eager' on cpu: "
                                          r"torchao's int4") as err:
        check_config("eager", "cpu", config)
    assert "\n" not in str(err.value) and err.value.exit_code == 2
    check_config("onnxruntime", "cpu", config)  # ORT's MatMulNBits takes it
    assert not eager_realises(config, "cpu") and eager_realises(CompressionConfig.from_dict({"precision": {
        "mlp": MLP}}), "cpu")


def test_eager_realised_text_names_the_blocks_of_each_entry():
    config = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "bf16", "int8", "bf16"], "attn": "bf16",
                                                        "base": "bf16"}})
    table = PRECISION[("eager", "cuda")]
    assert realised_precision(config, table) == {
        "precision.attn": "torch bf16", "precision.base": "torch bf16",
        "precision.mlp": "torchao int8 dynamic in blocks 0, 2; torch bf16 in blocks 1, 3"}


def test_float_structure_maps_each_entry():
    config = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "fp16", "int8-weight", "fp32"]}})
    assert float_structure(config).precision.mlp == ("fp32", "fp16", "fp32", "fp32")
    assert float_structure(config, keep_half=False).precision.mlp == "fp32"  # all-equal: the uniform form
    based = CompressionConfig.from_dict({"precision": {"mlp": ["int8", "bf16"], "attn": "bf16", "base": "bf16"}})
    assert float_structure(based).precision.mlp == "bf16" and float_structure(based).precision.base == "bf16"
    assert float_structure(based, keep_half=False).precision.is_identity()


def test_numerics_tolerance_and_fake_quant_read_every_entry():
    config = CompressionConfig.from_dict({"precision": {"mlp": MLP, "attn": ATTN}})
    assert tolerance(config) == ("int4-weight", 0.25, 0.85)
    assert tolerance(config, ("attn", "mlp")) == ("int8", 0.12, 0.97)
    scheme = scheme_for("ort", config, images=1)
    assert set(scheme.targets) == {(1, "attn", "int4-weight"), (3, "attn", "int4-weight"),
                                   (0, "mlp", "int8"), (2, "mlp", "int8"), (5, "mlp", "int8")}
    assert get_runtime("onnxruntime").changes_numerics(config)


def test_per_block_quantisation_agrees_with_the_fake_quant_schemes(builtin_model, mnist):
    """torchao's finalized model and ORT's torch reference quantise the blocks the fake-quant scheme names."""
    images = mnist.val.tensors[0][:16]
    torchao = CompressionConfig.from_dict({"precision": {"mlp": MLP, "attn": ["int8-weight"] + ["fp32"] * 7}})
    prepared = prepare(builtin_model, float_structure(torchao), calibration=mnist.calibration)
    ort = CompressionConfig.from_dict({"precision": {"mlp": MLP, "attn": ATTN}})
    reference, parts = quantised_like_ort(prepared, ort)
    assert parts == ("attn", "mlp")
    with torch.no_grad():
        real = finalize(prepared, torchao)(images)
        with fake_quantised(prepared, scheme_for("torchao", torchao)):
            fake = prepared(images)
        like_ort = reference(images)
        with fake_quantised(prepared, scheme_for("ort", ort, images=16)):
            fake_ort = prepared(images)
        plain = prepared(images)
    assert (fake - real).abs().max() <= 1e-5 * real.abs().max() < (plain - real).abs().max()
    assert (fake_ort - like_ort).abs().max() <= 1e-5 * like_ort.abs().max() < (plain - like_ort).abs().max()


def test_ort_quantises_exactly_the_blocks_each_entry_names(builtin_model, mnist):
    import onnx

    config = CompressionConfig.from_dict({"precision": {"mlp": MLP, "attn": ATTN}})
    prepared = prepare(builtin_model, float_structure(config), calibration=mnist.calibration)
    deployed, numerics = build_checked("onnxruntime", prepared, config, SHAPE, torch.device("cpu"), 1,
                                       mnist.calibration)
    nodes = onnx.load_from_string(deployed.artifact).graph.node
    ops = [n.op_type for n in nodes]
    assert ops.count("MatMulInteger") == 2 * MLP.count("int8") and ops.count("MatMulNBits") == 2 * ATTN.count(
        "int4-weight")
    still_float = {key for n in nodes if n.op_type == "MatMul" for key in _linear_scopes(n)}
    assert still_float == {(i, part) for part, entries in (("attn", ATTN), ("mlp", MLP))
                           for i, v in enumerate(entries) if v == "fp32"}
    assert deployed.realised["precision.mlp"].endswith("6 linears in blocks 0, 2, 5")  # that part's own count
    assert "4-bit" in deployed.realised["precision.attn"] and deployed.realised["precision.attn"].endswith(
        "in blocks 1, 3")
    assert numerics["tolerance_rel"] == 0.12 and numerics["top1_agreement"] >= 0.97


def _linear_scopes(node) -> set[tuple[int, str]]:
    """(block, part) of a block linear the exporter recorded as this node's module scope."""
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
    found = (re.fullmatch(r"blocks\.(\d+)\.(attn|mlp)\.(qkv|proj|fc1|fc2)", s) for s in scopes)
    return {(int(m[1]), m[2]) for m in found if m}
