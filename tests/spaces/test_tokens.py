"""Token semantics: tokens_per_block matches the counts a real forward pass sees."""

from __future__ import annotations

import pytest
import torch

from vitsearch.spaces import CompressionConfig, ConfigError, compress, tokens_per_block


def test_tokens_per_block_rule():
    cfg = CompressionConfig.from_dict({"depth": {"keep": 6}, "tokens": {"schedule": {"2": 0.7, "4": 0.7}}})
    # 49 -> round(34.3)=34 -> round(23.8)=24, plus the class token
    assert tokens_per_block(cfg, 49, 1, 8) == [(50, 50), (50, 50), (50, 35), (35, 35), (35, 25), (25, 25)]
    half = CompressionConfig.from_dict({"tokens": {"schedule": {"0": 0.5}}})
    assert tokens_per_block(half, 49, 1, 2) == [(50, 25), (25, 25)]  # round(24.5) == 24 (Python round)
    floor = CompressionConfig.from_dict({"tokens": {"method": "prune", "schedule": {"0": 0.01}}})
    assert tokens_per_block(floor, 49, 2, 1) == [(51, 3)]  # never below one patch token


def test_tokens_per_block_rejects_dropped_blocks():
    with pytest.raises(ConfigError, match="keeps 4 blocks"):
        tokens_per_block(CompressionConfig.from_dict({"tokens": {"schedule": {"5": 0.7}}}), 49, 1, 4)


def _observed(model, x):
    seen = []
    hooks = []
    for blk in model.blocks:
        hooks.append(blk.attn.register_forward_pre_hook(lambda m, a: seen.append(("attn", a[0].shape[1]))))
        hooks.append(blk.mlp.register_forward_pre_hook(lambda m, a: seen.append(("mlp", a[0].shape[1]))))
    model(x)
    for h in hooks:
        h.remove()
    return [(seen[i][1], seen[i + 1][1]) for i in range(0, len(seen), 2)]


@pytest.mark.parametrize("tokens", [
    {"method": "merge", "schedule": {"0": 0.5, "1": 0.5, "3": 0.9}},
    {"method": "merge", "schedule": {"2": 0.7, "3": 0.7}},
    {"method": "prune", "schedule": {"1": 0.3, "2": 0.5}},
    {"method": "prune", "schedule": {"0": 0.05}},
])
def test_tokens_per_block_agrees_with_forward(arch, tokens):
    model, x = arch
    cfg = CompressionConfig.from_dict({"depth": {"keep": 4}, "tokens": tokens})
    out = compress(model, cfg)
    expected = tokens_per_block(cfg, model.patch_embed.num_patches, model.num_prefix_tokens, len(model.blocks))
    assert _observed(out, x) == expected
    assert out.vitsearch_info["tokens"]["tokens_per_block"] == [list(t) for t in expected]


def test_keep_one_schedule_is_identical(tiny, tiny_input):
    cfg = {"tokens": {"schedule": {str(i): 1.0 for i in range(8)}}}
    for method in ("merge", "prune"):
        out = compress(tiny, {"tokens": {**cfg["tokens"], "method": method}})
        assert type(out.blocks).__name__ == "TokenBlocks"  # the patched path really ran
        torch.testing.assert_close(out(tiny_input), tiny(tiny_input), rtol=0, atol=0)


def test_merge_is_size_weighted_average():
    from vitsearch.spaces.vit.ops import bipartite_merge

    # prefix 9; patches p0=1 (A), p1=4 of size 2 (B), p2=3 (A), p3=5 (B); p0 matches p1 best
    x = torch.tensor([[[9.0], [1.0], [4.0], [3.0], [5.0]]])
    size = torch.tensor([[[1.0], [1.0], [2.0], [1.0], [1.0]]])
    metric = torch.tensor([[[5.0, 5.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0]]])
    out, new_size = bipartite_merge(x, metric, size, r=1, num_prefix=1)
    assert out[0, :, 0].tolist() == [9.0, 3.0, 3.0, 5.0]  # (1*1 + 4*2) / 3 == 3
    assert new_size[0, :, 0].tolist() == [1.0, 1.0, 3.0, 1.0]


def test_prune_fuses_the_rest_by_attention():
    from vitsearch.spaces.vit.ops import evit_prune

    x = torch.tensor([[[7.0], [1.0], [2.0], [3.0], [4.0]]])
    attn = torch.tensor([[0.1, 0.5, 0.3, 0.1]])
    out = evit_prune(x, attn, keep=2, num_prefix=1)
    # keeps p1 (0.5) and fuses p0, p2, p3 weighted 0.1, 0.3, 0.1 -> (0.1 + 0.9 + 0.4) / 0.5
    torch.testing.assert_close(out[0, :, 0], torch.tensor([7.0, 2.0, 2.8]))
