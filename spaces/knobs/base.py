"""The knob registry: each knob is a config dataclass paired with its handlers.

A knob module declares a frozen dataclass (validated in ``__post_init__``, JSON form
via ``to_dict`` / ``from_dict``) and registers it with :func:`register`, naming the
``prepare`` handler (trainable float changes: depth, heads, masks, tokens) and/or the
``finalize`` handler (deployment-only changes: precision, sparse kernels).
``compress`` runs the registered handlers in :data:`ORDER`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from vitsearch.spaces.errors import ConfigError

#: The order the issue fixes: depth first (later knobs see the kept blocks), precision last.
ORDER = ("depth", "heads", "sparsity", "tokens", "precision")


@dataclass
class Context:
    """What a handler may read besides the model and its own config.

    ``batches`` are calibration inputs (a list of image tensors) or None for the
    data-free criteria; ``info`` is the dict that becomes ``model.vitsearch_info``.
    """

    config: Any  # the whole CompressionConfig, for knobs that depend on another knob
    batches: list | None
    device: str
    info: dict = field(default_factory=dict)
    base: Any = None  # the uncompressed input model (for caches keyed on it)


@dataclass(frozen=True)
class Knob:
    """One registered knob: its name, config class and handlers."""

    name: str
    config_cls: type
    prepare: Callable | None = None
    finalize: Callable | None = None
    examples: tuple = ()  # JSON forms of this knob's sub-config, for docs and tests


REGISTRY: dict[str, Knob] = {}


def register(name: str, config_cls: type, prepare: Callable | None = None,
             finalize: Callable | None = None, examples: tuple = ()) -> None:
    """Register a knob; called once at import time by each knob module."""
    if name not in ORDER:
        raise ValueError(f"knob {name!r} has no place in ORDER {ORDER}")
    REGISTRY[name] = Knob(name, config_cls, prepare, finalize, tuple(examples))


def check_keys(where: str, data: Any, allowed: tuple[str, ...]) -> dict:
    """A JSON object with only known keys, else a ConfigError naming the strays."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__} {data!r}")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return data


def non_default_dict(cfg: Any) -> dict:
    """Fields of a knob config that differ from their defaults (the JSON form)."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value != f.default:
            out[f.name] = value
    return out


#: the two parts of a transformer block that per-part knobs (sparsity, precision) set separately
PARTS = ("attn", "mlp")


class PartsConfig:
    """Mixin of a knob set once per part (``attn``, ``mlp``), with one default value.

    The subclass is a frozen dataclass with fields ``attn`` and ``mlp`` and names its
    knob (``KNOB``) and its identity value (``DEFAULT``); identity, the JSON form, the
    one-line summary and the table columns follow from those.
    """

    KNOB: str
    DEFAULT: str

    def is_identity(self) -> bool:
        """True when every part keeps the default."""
        return all(getattr(self, p) == self.DEFAULT for p in PARTS)

    def to_dict(self) -> dict:
        """JSON form (only non-default fields)."""
        return non_default_dict(self)

    @classmethod
    def from_dict(cls, data: Any):
        """Inverse of :meth:`to_dict`."""
        return cls(**check_keys(cls.KNOB, data, PARTS))

    def summary(self) -> str | None:
        """e.g. ``mlp int8`` or ``attn 2:4``; None when nothing changes."""
        parts = [f"{p} {getattr(self, p)}" for p in PARTS if getattr(self, p) != self.DEFAULT]
        return " ".join(parts) or None

    def columns(self) -> dict:
        """Flat scalar columns for tables."""
        return {f"{self.KNOB}_{p}": getattr(self, p) for p in PARTS}


def check_positive_int(where: str, value: Any, allow_none: bool = True) -> None:
    """Positive int (not bool), or None when allowed."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: {value!r} is not allowed; expected a positive integer"
                          + (" or null (unchanged)" if allow_none else ""))
