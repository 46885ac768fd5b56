"""Per-block configs through what reads them: MACs, the component predictor, ONNX Runtime, a variant dir."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitsearch.evaluators.latency.predict.component import ComponentPredictor
from vitsearch.evaluators.latency.predict.keys import block_keys
from vitsearch.evaluators.macs import analytic_macs, block_macs
from vitsearch.spaces import CompressionConfig, compress, prepare
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.dims import VitDims

PER_BLOCK = {
    "depth": {"keep": 7},
    "heads": {"keep": [6, 5, 4, 4, 3, 1, 2], "kv_heads": [3, 5, 2, 1, 3, 1, 1]},
    "sparsity": {"mlp_keep": [288, 200, 104, 48, 40, 8, 96]},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    b, h, s_q, d = query_shape  # FlopCounterMode has no formula for the fused CPU kernel: both matmuls
    return 2 * b * h * s_q * key_shape[-2] * d + 2 * b * h * s_q * key_shape[-2] * value_shape[-1]


@pytest.mark.parametrize("tokens", [None, {"method": "merge", "schedule": {"3": 0.7}}])
def test_macs_equal_the_flop_counter_block_by_block(tiny, tokens):
    config = CompressionConfig.from_dict({**PER_BLOCK, **({"tokens": tokens} if tokens else {})})
    model = compress(tiny, config)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.inference_mode():
        model(torch.randn(1, 1, 28, 28))
    counts = counter.get_flop_counts()
    shapes = block_shapes(config, VitDims.of(tiny))
    assert [s.q_heads for s in shapes] == PER_BLOCK["heads"]["keep"]
    for i, shape in enumerate(shapes):  # ToMe's matching runs outside attn and mlp: each block is exact
        counted = sum(sum(counts.get(f"VisionTransformer.blocks.{i}.{part}", {}).values()) for part in ("attn", "mlp"))
        assert counted / 2 == block_macs(shape), (i, shape)
    if tokens is None:
        assert counter.get_total_flops() / 2 == analytic_macs(tiny, config)


def _linear_state(dims: VitDims) -> dict:
    """A component profile whose parts cost 1 ms per million MACs, at widths 288, 144 and (6, kv) heads."""
    from vitsearch.evaluators.latency.predict.scaled import part_macs

    tokens = [20, 35, 50]

    def table(part, sizes):
        return {"tokens": tokens, "ms": [part_macs(part, sizes, n, dims) * 1e-6 for n in tokens]}

    attn = {f"h6-kv{kv}-fp32-dense": table("attn", (6, kv)) for kv in (1, 2, 3, 6)}
    attn["h4-kv4-fp32-dense"] = table("attn", (4, 4))
    mlp = {"f288-fp32-dense": table("mlp", (288,)), "f144-fp32-structured:0.5": table("mlp", (144,))}
    return {"dims": dims.block_dict(), "columns": ["stem", "attn_fp32", "mlp_fp32", "n_blocks", "const"],
            "coef": [1.0, 1.0, 1.0, 0.0, 0.0], "boot": [], "sigma_rel": 0.0,
            "tables": {"attn": attn, "mlp": mlp, "reduce": {}, "stem": 0.0}}


def test_component_predictor_reads_unprofiled_heads_and_widths_by_their_macs(tiny):
    dims = VitDims.of(tiny)
    predictor = ComponentPredictor(_linear_state(dims))
    inside = CompressionConfig.from_dict({"heads": {"keep": [6, 5, 4, 6, 5, 4, 6, 5]},
                                          "sparsity": {"mlp_keep": [288, 200, 144, 168, 256, 152, 144, 240]}})
    blocks = block_shapes(inside, dims)
    assert block_keys(blocks[1]) == ("h5-kv5-fp32-dense", "f200-fp32-dense")  # keys no profile holds
    expected = sum(block_macs(b) for b in blocks) * 1e-6  # the tables are linear in MACs: interpolation is exact
    p = predictor.predict(inside)
    assert p.median_ms == pytest.approx(expected, rel=1e-9) and not p.out_of_range
    narrow = CompressionConfig.from_dict({"sparsity": {"mlp_keep": [288] * 7 + [40]}})
    p = predictor.predict(narrow)
    assert p.median_ms == pytest.approx(sum(block_macs(b) for b in block_shapes(narrow, dims)) * 1e-6, rel=1e-9)
    assert p.out_of_range and "f40-fp32-dense not profiled" in p.reason


def test_onnx_runtime_exports_and_runs_a_per_block_model(tiny):
    import onnxruntime as ort

    from vitsearch.evaluators.runtimes.onnxexport import export_onnx

    config = CompressionConfig.from_dict(PER_BLOCK)
    prepared = prepare(tiny, config)
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    proto, nodes = export_onnx(prepared, config, x)
    assert len(nodes["attn"]) == len(nodes["mlp"]) == 2 * 7
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, prepared(x).numpy(), atol=1e-4)


def test_a_variant_dir_of_a_per_block_model_loads_strictly(builtin_model, tmp_path):
    from vitsearch.search.results.variant import load_variant

    config = CompressionConfig.from_dict(PER_BLOCK)
    prepared = prepare(builtin_model, config, calibration=torch.randn(8, 1, 28, 28))
    (tmp_path / "config.json").write_text(config.to_json())
    torch.save(prepared.state_dict(), tmp_path / "weights.pt")
    (tmp_path / "study.yaml").write_text("name: perblock\n")
    (tmp_path / "provenance.json").write_text(json.dumps({}))
    variant = load_variant(tmp_path)
    assert variant.config == config and json.loads((tmp_path / "config.json").read_text())["schema_version"] == 2
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(variant.model(x), prepared(x))
