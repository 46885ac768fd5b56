"""block_shapes(): a config's cost structure, one BlockShape per kept block, from the model's dimensions.

What ``compress`` does to a model, :func:`block_shapes` does to the list of
:class:`~vitsearch.spaces.vit.blocks.BlockShape`: it starts from the uncompressed
model's blocks and lets every registered knob, in :data:`~.knobs.base.ORDER`, rewrite
what it changes (depth drops blocks, heads sets the head counts, structured sparsity the
MLP width, tokens the token counts, precision and sparsity the formats per part). The
MACs and the latency predictor's structural features read this list, block by block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from vitsearch.spaces.knobs.base import ORDER, REGISTRY
from vitsearch.spaces.vit.blocks import BlockShape, base_blocks
from vitsearch.spaces.vit.dims import VitDims


@lru_cache(maxsize=4096)
def block_shapes(config: Any, dims: VitDims) -> tuple[BlockShape, ...]:
    """The kept blocks of ``compress(model, config)`` for a model of ``dims`` (a CompressionConfig).

    ConfigError when the config does not fit the dims (more blocks kept than the model
    has, a token block that depth dropping removes). Pure and cached (both arguments are
    frozen): predictors call it for every config they rate.
    """
    blocks = base_blocks(dims)
    for name in ORDER:
        blocks = REGISTRY[name].shape(blocks, getattr(config, name), dims)
    return tuple(blocks)
