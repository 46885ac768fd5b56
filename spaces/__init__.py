"""What can be changed and how: CompressionConfig, compress(), SearchSpace, the knobs."""

from vitsearch.spaces.config import SCHEMA_VERSION, CompressionConfig
from vitsearch.spaces.errors import ConfigError, DeviceError, ModelError, VitsearchError
from vitsearch.spaces.knobs.depth import DepthConfig
from vitsearch.spaces.knobs.heads import HeadsConfig
from vitsearch.spaces.knobs.precision import PrecisionConfig
from vitsearch.spaces.knobs.sparsity import SparsityConfig
from vitsearch.spaces.knobs.tokens import TokensConfig, tokens_per_block

_LAZY = {  # torch-heavy names load on first use, so importing the package stays fast
    "compress": "compression", "prepare": "compression", "finalize": "compression", "reapply_masks": "compression",
    "SearchSpace": "space", "SpaceSpec": "space", "VitDims": "vit.dims",
    "block_shapes": "blocks", "BlockShape": "vit.blocks",
    "supported_precisions": "knobs.precision",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_LAZY, "SCHEMA_VERSION", "CompressionConfig", "DepthConfig", "HeadsConfig", "TokensConfig",
    "SparsityConfig", "PrecisionConfig", "tokens_per_block",
    "VitsearchError", "ConfigError", "ModelError", "DeviceError",
]
