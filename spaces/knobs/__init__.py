"""One module per knob; importing this package registers all of them."""

from . import depth, heads, precision, sparsity, tokens  # noqa: F401
from .base import ORDER, REGISTRY

__all__ = ["ORDER", "REGISTRY"]
