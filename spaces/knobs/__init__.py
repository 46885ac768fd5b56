"""One module per knob; importing this package registers all of them."""

from vitsearch.spaces.knobs import depth, heads, precision, sparsity, tokens  # noqa: F401
from vitsearch.spaces.knobs.base import ORDER, REGISTRY

__all__ = ["ORDER", "REGISTRY"]
