"""int4 weight-only: the packing each device kind gets from torchao, and the refusal on CPU."""

from __future__ import annotations

import pytest

from vitsearch.spaces import PrecisionConfig
from vitsearch.spaces.errors import DeviceError
from vitsearch.spaces.knobs.precision import check_precision_device, int4_config


def test_cuda_packs_int4_for_the_core_aten_kernels_not_mslk():
    from torchao.quantization.quantize_.workflows.int4.int4_packing_format import Int4PackingFormat

    cfg = int4_config(768, "cuda:0")
    assert cfg.int4_packing_format == Int4PackingFormat.TILE_PACKED_TO_4D  # the default PLAIN needs mslk
    assert cfg.group_size == 128
    assert int4_config(3072, "cuda").int4_packing_format == Int4PackingFormat.TILE_PACKED_TO_4D


@pytest.mark.parametrize("in_features, group", [(768, 128), (192, 64), (96, 32), (144, 128)])
def test_group_size_is_the_largest_dividing_the_inputs(in_features, group):
    # 144 (the built-in model) has none: torchao leaves it unquantized and the knob reports that
    assert int4_config(in_features, "cuda").group_size == group


def test_cpu_refuses_int4_before_any_work_and_says_why():
    with pytest.raises(DeviceError, match=r"precision\.mlp: 'int4-weight' cannot run on device 'cpu'.*mslk"):
        check_precision_device(PrecisionConfig(attn="fp32", mlp="int4-weight"), "cpu")
    check_precision_device(PrecisionConfig(attn="int4-weight", mlp="int4-weight"), "cuda")  # probed when applied
