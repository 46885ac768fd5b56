"""compress(): every knob on two architectures, exactness where promised, pickling."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from vitsearch.spaces import (CompressionConfig, ConfigError, DeviceError, ModelError, compress, finalize,
                              prepare, reapply_masks)

from knob_examples import ALL_FIVE, KNOB_EXAMPLES


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_identity_equals_base_and_input_untouched(arch):
    model, x = arch
    before, ref = state(model), model(x)
    out = compress(model, {})
    assert out is not model
    assert torch.equal(out(x), ref)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert out.vitsearch_info["config"] == {"schema_version": 1} and out.vitsearch_info["finalized"]
    attn = out.blocks[0].attn  # what the MACs code reads, on every compressed model
    assert attn.num_kv_heads == attn.num_heads == model.blocks[0].attn.num_heads and attn.head_dim > 0


@pytest.mark.parametrize("name", sorted(KNOB_EXAMPLES))
def test_every_knob_runs_on_both_architectures(arch, name):
    model, x = arch
    before = state(model)
    out = compress(model, KNOB_EXAMPLES[name])
    y = out(x)
    assert y.shape == model(x).shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # input never mutated
    assert pickle.loads(pickle.dumps(out))(x).allclose(y, atol=1e-5)  # Ray ships models by pickle


def test_all_five_knobs_compose(tiny, tiny_input):
    out = compress(tiny, ALL_FIVE, calibration=torch.randn(8, 1, 28, 28))
    info = out.vitsearch_info
    assert len(out.blocks) == 6
    assert all(b.attn.num_heads == 4 and b.attn.num_kv_heads == 2 and b.attn.head_dim == 24 for b in out.blocks)
    assert all(b.mlp.fc1.out_features == 216 for b in out.blocks)  # round(288 * 0.75)
    assert info["criterion"] == {"depth": "calibration", "heads": "calibration", "mlp": "calibration"}
    assert len(info["depth"]["dropped"]) == 2
    y = out(tiny_input)
    assert torch.isfinite(y).all()
    assert torch.equal(pickle.loads(pickle.dumps(out))(tiny_input), y)


def test_grouping_and_pruning_noop_is_identical(arch):
    model, x = arch
    heads = model.blocks[0].attn.num_heads
    out = compress(model, {"heads": {"keep": heads, "kv_heads": heads}})
    assert type(out.blocks[0].attn).__name__ == "VitsearchAttention"  # converted path really ran
    torch.testing.assert_close(out(x), model(x), rtol=0, atol=0)


def test_kv_grouping_is_mean_pooling(tiny):
    out = compress(tiny, {"heads": {"kv_heads": 3}})
    w, new = tiny.blocks[0].attn.qkv.weight, out.blocks[0].attn.qkv.weight
    d = 144
    for start in (d, 2 * d):  # K rows, then V rows: consecutive head pairs averaged
        pooled = w[start:start + d].reshape(3, 2, 24, d).mean(1).reshape(72, d)
        torch.testing.assert_close(new[d + (start - d) // 2:d + (start - d) // 2 + 72], pooled)
    torch.testing.assert_close(new[:d], w[:d])  # queries untouched
    assert out.blocks[0].attn.qkv.out_features == 144 + 2 * 72


def test_head_pruning_shrinks_attention(tiny, tiny_input):
    out = compress(tiny, {"heads": {"keep": 3}})
    attn = out.blocks[0].attn
    assert attn.qkv.weight.shape == (3 * 72, 144) and attn.proj.weight.shape == (144, 72)
    assert out.vitsearch_info["criterion"]["heads"] == "data-free"
    assert out(tiny_input).shape == (3, 10)


def _masked_weights(model, part):
    names = ("qkv", "proj") if part == "attn" else ("fc1", "fc2")
    return [getattr(getattr(b, part), n) for b in model.blocks for n in names]


def test_two_four_masks_exactly_two_zeros_per_four(tiny):
    prepared = prepare(tiny, {"sparsity": {"attn": "2:4", "mlp": "2:4"}})
    for part in ("attn", "mlp"):
        for lin in _masked_weights(prepared, part):
            groups = lin.weight.reshape(lin.out_features, -1, 4)
            assert ((groups == 0).sum(-1) == 2).all()
            assert lin.weight_mask.dtype == torch.bool
    final = compress(tiny, {"sparsity": {"mlp": "2:4"}})
    assert not hasattr(final.blocks[0].mlp.fc1, "weight_mask")  # masks baked in, bytes dropped
    assert final.vitsearch_info["sparsity"]["mlp"]["sparse_kernels"] is False  # CPU: masked dense


def test_unstructured_zeroes_the_share_per_layer(tiny):
    out = compress(tiny, {"sparsity": {"attn": "unstructured:0.3"}})
    for lin in _masked_weights(out, "attn"):
        assert (lin.weight == 0).sum().item() == round(0.3 * lin.weight.numel())


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_structured_reduces_mlp_parameters_by_share(arch, p):
    model, x = arch
    def mlp_params(m):
        return sum(t.numel() for b in m.blocks for t in b.mlp.parameters())
    out = compress(model, {"sparsity": {"mlp": f"structured:{p}"}})
    hidden = model.blocks[0].mlp.fc1.out_features
    kept = max(1, round(hidden * (1 - p)))
    assert out.blocks[0].mlp.fc1.out_features == kept
    fc2_bias = sum(b.mlp.fc2.bias.numel() for b in model.blocks)
    assert (mlp_params(out) - fc2_bias) / (mlp_params(model) - fc2_bias) == pytest.approx(1 - p, abs=0.01)


def test_reapply_masks_after_a_training_step(tiny, tiny_input):
    model = prepare(tiny, {"sparsity": {"mlp": "2:4", "attn": "unstructured:0.5"}})
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(tiny_input).sum().backward()
    opt.step()
    lin = model.blocks[0].mlp.fc1
    assert (lin.weight[~lin.weight_mask] != 0).any()  # the step refilled masked weights
    assert reapply_masks(model) == 32
    assert (lin.weight[~lin.weight_mask] == 0).all()
    final = finalize(model, {"sparsity": {"mlp": "2:4", "attn": "unstructured:0.5"}})
    assert hasattr(model.blocks[0].mlp.fc1, "weight_mask")  # finalize copies; its input keeps masks
    assert final.vitsearch_info["finalized"]


def test_int8_output_close_to_fp32(arch):
    model, x = arch
    out = compress(model, {"precision": {"attn": "int8", "mlp": "int8"}})
    assert type(out.blocks[0].mlp.fc1.weight).__name__ != "Parameter"
    assert cosine(out(x), model(x)) >= 0.99


def test_int8_accuracy_on_trained_builtin(trained):
    model, data = trained
    images, labels = data.val.tensors
    out = compress(model, {"precision": {"attn": "int8", "mlp": "int8"}}, calibration=data.calibration)
    with torch.no_grad():
        ref, q = model(images), out(images)
    acc_ref = (ref.argmax(1) == labels).float().mean().item()
    acc_q = (q.argmax(1) == labels).float().mean().item()
    assert cosine(q, ref) >= 0.99
    assert abs(acc_ref - acc_q) <= 0.01


def test_half_precision_accepts_fp32_input(tiny, tiny_input):
    for cfg in ({"attn": "bf16", "mlp": "bf16"}, {"attn": "fp16", "mlp": "fp32"}):
        out = compress(tiny, {"precision": cfg})
        y = out(tiny_input)
        assert y.dtype == torch.float32 and cosine(y, tiny(tiny_input)) >= 0.99


def test_int4_on_cpu_is_a_clear_device_error(tiny):
    with pytest.raises(DeviceError, match=r"precision.mlp: 'int4-weight' cannot run on device 'cpu'.*supports"):
        compress(tiny, {"precision": {"mlp": "int4-weight"}})


def test_depth_ranking_criteria_and_cache(tiny, tiny_input):
    from vitsearch.spaces.knobs import depth

    calib = torch.randn(8, 1, 28, 28)
    a = compress(tiny, {"depth": {"keep": 4}}, calibration=calib)
    assert a.vitsearch_info["criterion"]["depth"] == "calibration"
    assert len(depth._RANKINGS[tiny]) >= 1
    b = compress(tiny, {"depth": {"keep": 5}}, calibration=calib)
    ranked = sorted(range(8), key=lambda i: a.vitsearch_info["depth"]["scores"][i])
    assert b.vitsearch_info["depth"]["dropped"] == sorted(ranked[:3])  # same ranking, one fewer drop
    free = compress(tiny, {"depth": {"keep": 4}})
    assert free.vitsearch_info["criterion"]["depth"] == "data-free"


def test_calibration_forms(tiny, mnist_like=None):
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.randn(10, 1, 28, 28), torch.zeros(10, dtype=torch.long))
    for calib in (ds, DataLoader(ds, batch_size=4), torch.randn(5, 1, 28, 28)):
        out = compress(tiny, {"heads": {"keep": 4}}, calibration=calib)
        assert out.vitsearch_info["criterion"]["heads"] == "calibration"


@pytest.mark.parametrize("cfg, error, words", [
    ({"depth": {"keep": 9}}, ConfigError, ["depth.keep", "9", "8 blocks"]),
    ({"heads": {"keep": 7}}, ConfigError, ["heads.keep", "7", "6 heads"]),
    ({"heads": {"kv_heads": 4}}, ConfigError, ["heads.kv_heads", "4", "1, 2, 3, 6"]),
    ({"tokens": {"schedule": {"8": 0.7}}}, ConfigError, ["tokens.schedule", "block 8"]),
])
def test_model_dependent_errors(tiny, cfg, error, words):
    with pytest.raises(error) as err:
        compress(tiny, cfg)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_refuses_non_vit_and_bad_device(tiny):
    with pytest.raises(ModelError, match="not supported"):
        compress(torch.nn.Linear(2, 2), {})
    with pytest.raises(DeviceError, match="device"):
        compress(tiny, {}, device="tpu")


def test_config_objects_and_json_text_are_accepted(tiny, tiny_input):
    cfg = CompressionConfig.from_dict({"depth": {"keep": 7}})
    a, b = compress(tiny, cfg), compress(tiny, cfg.to_json())
    assert torch.equal(a(tiny_input), b(tiny_input))
    assert copy.deepcopy(a).vitsearch_info == a.vitsearch_info


@pytest.mark.parametrize("method", ["merge", "prune"])
def test_prepared_model_trains(tiny, tiny_input, method):
    cfg = {**ALL_FIVE, "tokens": {"method": method, "schedule": {"1": 0.5, "3": 0.7}}}
    model = prepare(tiny, cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(tiny_input).logsumexp(-1).mean()
    loss.backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    opt.step()
    reapply_masks(model)
    final = finalize(model, cfg)
    assert torch.isfinite(final(tiny_input)).all()


def test_permuting_heads_keeps_outputs(tiny, tiny_input):
    from vitsearch.spaces.vit import adapter as vit

    model = prepare(tiny, {"heads": {"kv_heads": 6}})
    ref = model(tiny_input)
    for block in model.blocks:
        vit.prune_heads(block.attn, torch.tensor([3, 0, 5, 1, 4, 2]))
    torch.testing.assert_close(model(tiny_input), ref, rtol=1e-5, atol=1e-5)


def test_sparse_kernel_conversion_flow_without_cuda(tiny, monkeypatch):
    # No GPU here: stand in for the CUDA-only packing to check which layers get converted.
    from vitsearch.spaces.knobs.base import Context
    from vitsearch.spaces.knobs.sparsity import finalize_sparsity

    packed = []
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda w: packed.append(w.shape) or w.clone())
    cfg = CompressionConfig.from_dict({"sparsity": {"attn": "2:4", "mlp": "2:4"}, "precision": {"mlp": "fp16"}})
    model = prepare(tiny, cfg)
    ctx = Context(config=cfg, batches=None, device="cuda", info={})
    finalize_sparsity(model, cfg.sparsity, ctx)
    assert ctx.info["sparsity"]["mlp"] == {"sparse_kernels": True, "sparse_layers": "16/16", "refused": None}
    assert ctx.info["sparsity"]["attn"]["sparse_kernels"] is False  # fp32 attn: no sparse kernels
    assert len(packed) == 16
