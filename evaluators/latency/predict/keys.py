"""The component predictor's vocabulary, shared with the profile that measures it: table keys and columns."""

from __future__ import annotations

from vitsearch.spaces.knobs.sparsity import parse_sparsity, structured_width
from vitsearch.spaces.vit.blocks import BlockShape
from vitsearch.spaces.vit.dims import VitDims

#: Structural-count columns of the component predictor's first stage (prior coefficient 0).
COUNT_FEATURES = ("n_blocks", "n_token_blocks", "n_masked_blocks", "n_gqa_blocks", "const")


def is_count(column: str) -> bool:
    """Structural-count columns (prior coefficient 0) as opposed to component-ms sums (prior 1)."""
    return column in COUNT_FEATURES or column.startswith(("nb_", "tok_"))


def attn_key(h_q: int, kv: int, precision: str, sparsity: str) -> str:
    """Table key of an attention part."""
    return f"h{h_q}-kv{kv}-{precision}-{sparsity}"


def mlp_key(hidden: int, precision: str, sparsity: str) -> str:
    """Table key of an MLP part (structured sparsity shows as the hidden width too)."""
    return f"f{hidden}-{precision}-{sparsity}"


def block_keys(block: BlockShape) -> tuple[str, str]:
    """Table keys of a block's attention and MLP parts."""
    return (attn_key(block.q_heads, block.kv_heads, block.precision.attn, block.sparsity.attn),
            mlp_key(block.mlp_hidden, block.precision.mlp, block.sparsity.mlp))


def is_dense_kernel(sparsity: str) -> bool:
    """Whether an MLP of this sparsity runs dense kernels (dense, or narrowed by structured pruning)."""
    return parse_sparsity("sparsity.mlp", sparsity)[0] in ("dense", "structured")


def hidden_for(dims: VitDims, sparsity_mlp: str) -> int:
    """MLP hidden width after structured pruning (the rounding rule of the sparsity knob)."""
    kind, p = parse_sparsity("sparsity.mlp", sparsity_mlp)
    return structured_width(dims.mlp_hidden, p) if kind == "structured" else dims.mlp_hidden
