"""The global allocator: saliency on data, exact budgets, cost-aware ranking, determinism."""

from __future__ import annotations

import copy

import pytest
import torch

from vitsearch.evaluators.macs import block_macs
from vitsearch.spaces import CompressionConfig, ConfigError, compress
from vitsearch.spaces.allocate import (GROUP, Costs, Saliency, allocate, allocate_macs, least_macs_ratio, mac_costs,
                                       macs_share, measure)
from vitsearch.spaces.blocks import block_shapes
from vitsearch.spaces.vit.dims import VitDims

CALIBRATION = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def planted():
    """The built-in architecture (random weights) with block 3's heads and block 5's MLP switched off:
    their proj columns / fc2 columns are zero, so removing them changes nothing."""
    from vitsearch.evaluators.models import create_vitsearch_tiny

    torch.manual_seed(0)
    model = create_vitsearch_tiny().eval()
    with torch.no_grad():
        model.blocks[3].attn.proj.weight.zero_()
        model.blocks[5].mlp.fc2.weight.zero_()
    return model


@pytest.mark.parametrize("calibration", [CALIBRATION, None], ids=["calibration", "data-free"])
def test_structures_that_do_nothing_go_first(planted, calibration):
    s = measure(planted, calibration)
    assert s.criterion == ("data-free" if calibration is None else "calibration")
    assert max(s.heads[3]) == 0.0 and max(s.groups[5]) == 0.0 and min(map(min, s.heads[:3])) > 0.0
    dims = VitDims.of(planted)
    a = allocate(s, dims, heads_removed=5 / 48, mlp_removed=35 / 288)  # 5 of 48 heads, 35 of 288 groups
    assert a.heads == (6, 6, 6, 1, 6, 6, 6, 6)
    assert a.hidden == (288, 288, 288, 288, 288, GROUP, 288, 288)


def test_budgets_are_met_exactly_and_every_block_keeps_one(planted):
    s, dims = measure(planted, CALIBRATION), VitDims.of(planted)
    for heads_removed, mlp_removed, keep in [(0.25, 0.5, None), (0.5, 0.75, 5), (0.8, 0.95, 4), (0.0, 0.0, 6)]:
        a = allocate(s, dims, heads_removed, mlp_removed, depth_keep=keep)
        n = keep or 8
        assert len(a.heads) == len(a.hidden) == n
        assert 6 * n - sum(a.heads) == round(heads_removed * 6 * n)
        assert (288 * n - sum(a.hidden)) // GROUP == round(mlp_removed * 36 * n)
        assert min(a.heads) >= 1 and min(a.hidden) >= GROUP and all(w % GROUP == 0 for w in a.hidden)


def test_the_allocation_is_a_config_compress_builds(planted):
    s, dims = measure(planted, CALIBRATION), VitDims.of(planted)
    base = CompressionConfig.from_dict({"depth": {"keep": 6}, "sparsity": {"mlp": "2:4"}})
    a = allocate(s, dims, 0.5, 0.5, depth_keep=6)
    cfg = a.apply(base, dims, kv=2)
    assert cfg.depth.keep == 6 and cfg.sparsity.mlp == "2:4" and cfg.is_per_block()
    pairs = cfg.heads.per_block(6, 6)
    assert [q for q, _ in pairs] == list(a.heads)
    assert all(q % kv == 0 and kv == max(g for g in (1, 2) if q % g == 0) for q, kv in pairs)
    out = compress(planted, cfg, calibration=CALIBRATION)
    assert [(b.attn.num_heads, b.attn.num_kv_heads, b.mlp.fc1.out_features) for b in out.blocks] == [
        (q, kv, w) for (q, kv), w in zip(pairs, a.hidden)]
    # the blocks the allocator counted on are the ones depth dropping keeps
    assert out.vitsearch_info["depth"]["kept"] == s.kept(6)
    assert allocate(s, dims).apply(CompressionConfig(), dims).is_identity()


def _flat(n_blocks: int, heads: int = 4, groups: int = 4) -> Saliency:
    return Saliency(((1.0,) * heads,) * n_blocks, ((1.0,) * groups,) * n_blocks, GROUP, (1.0,) * n_blocks, "test")


DIMS = VitDims(embed_dim=32, num_heads=4, head_dim=8, mlp_hidden=4 * GROUP, depth=3, num_patches=16,
               num_prefix_tokens=1)


def test_cost_division_removes_the_costly_structures_first():
    """Equal saliency everywhere: by MACs (alike per block) the earlier block breaks ties; with a latency
    cost ten times higher in block 2, block 2's heads and groups go first."""
    s = _flat(3)
    assert allocate(s, DIMS, 3 / 12, 3 / 12).heads == (1, 4, 4)
    slow = Costs(head=(1.0, 1.0, 10.0), group=(1.0, 1.0, 10.0))
    a = allocate(s, DIMS, 3 / 12, 3 / 12, costs=slow)
    assert a.heads == (4, 4, 1) and a.hidden == (4 * GROUP, 4 * GROUP, GROUP)


def test_a_mac_target_removes_across_types_by_normalised_score():
    """Each type's scores average 1 (saliency per MAC over the type's): block 0's channel groups, far below
    their type's mean, go first; then the heads (all at their mean, 1) before the other groups (1.5)."""
    s = Saliency(((1.0,) * 4,) * 3, ((0.01,) * 4, (1.0,) * 4, (1.0,) * 4), GROUP, (1.0,) * 3, "test")
    macs = mac_costs(DIMS)
    h, g = macs.head[0], macs.group[0]
    total = 12 * h + 12 * g
    a = allocate_macs(s, DIMS, (total - 3 * g) / total)
    assert a.heads == (4, 4, 4) and a.hidden == (GROUP, 4 * GROUP, 4 * GROUP)
    a = allocate_macs(s, DIMS, (total - 3 * g - 2 * h) / total)
    assert a.heads == (2, 4, 4) and a.hidden == (GROUP, 4 * GROUP, 4 * GROUP)
    dims = VitDims(**{**DIMS.__dict__, "in_chans": 1, "patch_area": 16, "num_classes": 10, "num_heads_out": 1})
    counted = sum(block_macs(b) for b in block_shapes(a.apply(CompressionConfig(), dims), dims))
    assert counted == total - 3 * g - 2 * h  # the allocator's MAC account is the analytic count
    with pytest.raises(ConfigError, match="MAC ratio of 0.01"):
        allocate_macs(s, DIMS, 0.01)


@pytest.mark.parametrize("kwargs, words", [
    ({"heads_removed": 0.9}, ["allocation.heads_removed", "0.9", "at most 9 of 12"]),
    ({"mlp_removed": 1.0}, ["allocation.mlp_removed", "1.0"]),
    ({"mlp_removed": -0.1}, ["allocation.mlp_removed", "-0.1"]),
])
def test_budgets_beyond_one_structure_per_block_are_refused(kwargs, words):
    with pytest.raises(ConfigError) as err:
        allocate(_flat(3), DIMS, **kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_measure_is_deterministic_and_cached(planted):
    from vitsearch.spaces import allocate as module

    first = measure(planted, CALIBRATION)
    assert measure(planted, CALIBRATION) is first  # the search pays it once
    module._CACHE.clear()
    again = measure(copy.deepcopy(planted), CALIBRATION.clone())
    assert again == first and again is not first
    assert measure(planted, CALIBRATION[:8]) != first  # other calibration, other saliency
    with pytest.raises(ConfigError, match="allocation.group: 7 .* 288"):
        measure(planted, CALIBRATION, group=7)


def test_labels_are_used_when_the_calibration_has_them(planted):
    labels = torch.arange(16) % 10
    with_labels = measure(planted, list(zip(CALIBRATION, labels)))
    assert with_labels.criterion == "calibration" and with_labels != measure(planted, CALIBRATION)
    assert not planted.training and all(p.grad is None for p in planted.parameters())


def test_a_mac_target_is_a_share_of_the_kept_blocks():
    """With blocks dropped, the ratio counts the kept blocks' MACs only: depth and the budget stay separate."""
    s = Saliency(((1.0,) * 4,) * 3, ((1.0,) * 4,) * 3, GROUP, (3.0, 1.0, 2.0), "test")
    macs = mac_costs(DIMS)
    whole = 4 * macs.head[0] + 4 * macs.group[0]
    for ratio in (1.0, 0.75, 0.5):
        a = allocate_macs(s, DIMS, ratio, depth_keep=2)
        assert len(a.heads) == 2  # block 1, the least important, is dropped
        left = sum(macs.head[0] * h + macs.group[0] * w / GROUP for h, w in zip(a.heads, a.hidden))
        assert ratio * 2 * whole - max(macs.head[0], macs.group[0]) < left <= ratio * 2 * whole
    assert allocate_macs(s, DIMS, 1.0, depth_keep=2) == allocate_macs(s, DIMS, 1.0, depth_keep=2)
    assert least_macs_ratio(DIMS) == pytest.approx((macs.head[0] + macs.group[0]) / whole)
    allocate_macs(s, DIMS, least_macs_ratio(DIMS))  # the least ratio is reachable


def test_macs_share_is_the_share_allocate_macs_meets():
    """The allocator's MAC account is macs_share: a reachable ratio comes back exactly, any other within one
    structure below it, with blocks dropped too; all heads and full widths are the whole, 1.0."""
    s = Saliency(((1.0,) * 4,) * 3, ((0.01,) * 4, (1.0,) * 4, (1.0,) * 4), GROUP, (3.0, 1.0, 2.0), "test")
    macs = mac_costs(DIMS)
    h, g = macs.head[0], macs.group[0]
    total = 12 * h + 12 * g
    for ratio in ((total - 3 * g) / total, (total - 3 * g - 2 * h) / total, least_macs_ratio(DIMS)):
        a = allocate_macs(s, DIMS, ratio)
        assert macs_share(DIMS, a.heads, a.hidden) == pytest.approx(ratio)
    for ratio, keep in ((0.8, None), (0.5, None), (0.75, 2), (0.5, 2)):
        a = allocate_macs(s, DIMS, ratio, depth_keep=keep)
        whole = len(a.heads) * total / 3
        assert ratio - max(h, g) / whole < macs_share(DIMS, a.heads, a.hidden) <= ratio
    assert macs_share(DIMS, [4] * 3, [4 * GROUP] * 3) == 1.0
    assert macs_share(DIMS, [4], [4 * GROUP]) == 1.0
