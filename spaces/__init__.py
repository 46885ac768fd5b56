"""What can be changed and how: CompressionConfig, compress(), SearchSpace, the knobs."""

from .config import SCHEMA_VERSION, CompressionConfig
from .errors import ConfigError, DeviceError, ModelError, VitsearchError
from .knobs.depth import DepthConfig
from .knobs.heads import HeadsConfig
from .knobs.precision import PrecisionConfig
from .knobs.sparsity import SparsityConfig
from .knobs.tokens import TokensConfig, tokens_per_block

_LAZY = {  # torch-heavy names load on first use, so importing the package stays fast
    "compress": "pipeline", "prepare": "pipeline", "finalize": "pipeline", "reapply_masks": "pipeline",
    "SearchSpace": "space", "SpaceSpec": "space", "ModelDims": "space",
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
