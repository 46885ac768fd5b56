"""The knob registry: each knob is a config dataclass paired with its handlers, its sub-space and its cost.

A knob module declares a frozen dataclass (validated in ``__post_init__``, JSON form
via ``to_dict`` / ``from_dict``) and registers it with :func:`register`, naming

- the ``prepare`` handler (trainable float changes: depth, heads, masks, tokens) and/or
  the ``finalize`` handler (deployment-only changes: precision, sparse kernels);
- its part of a study's ``space:`` section (``space_spec``, a pydantic model) and that
  part resolved against a model (``space``, a :class:`~.subspace.KnobSpace`): the Optuna
  parameters it contributes and their decoding into its sub-config;
- its cost contribution (``shape``): what it changes in each kept block's
  :class:`~vitsearch.spaces.vit.blocks.BlockShape`, which the MACs and the latency
  predictor read.

``compress`` runs the handlers in :data:`ORDER`, as ``block_shapes`` runs the ``shape``
functions; ``SpaceSpec`` and ``SearchSpace`` walk the knobs in :data:`FIELDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.vit.blocks import PerPart

#: The order knobs apply in: depth first (later knobs see the kept blocks), precision last.
ORDER = ("depth", "heads", "sparsity", "tokens", "precision")
#: The order knobs are written in: CompressionConfig's fields, a study's ``space:`` section
#: (its JSON schema and YAML) and the Optuna parameters. Samplers draw a trial's parameters
#: in this order from one random stream, so another order gives a seeded study other trials.
FIELDS = ("depth", "heads", "tokens", "sparsity", "precision")


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
    """One registered knob: its name, config class, sub-space, cost contribution and handlers.

    ``shape(blocks, sub_config, dims)`` returns the list of :class:`BlockShape` with what
    the knob changes; ``preset_rank`` orders the presets that change this knob alone
    (lower first, the order a study enqueues them in; None: the knob has no such preset).
    """

    name: str
    config_cls: type
    space_spec: type
    space: type
    shape: Callable
    prepare: Callable | None = None
    finalize: Callable | None = None
    examples: tuple = ()  # JSON forms of this knob's sub-config, for docs and tests
    preset_rank: int | None = None


REGISTRY: dict[str, Knob] = {}


def register(name: str, config_cls: type, *, space_spec: type, space: type, shape: Callable,
             prepare: Callable | None = None, finalize: Callable | None = None, examples: tuple = (),
             preset_rank: int | None = None) -> None:
    """Register a knob; called once at import time by each knob module (every part but the handlers is required)."""
    if name not in ORDER or name not in FIELDS:
        raise ValueError(f"knob {name!r} has no place in ORDER {ORDER} and FIELDS {FIELDS}")
    REGISTRY[name] = Knob(name, config_cls, space_spec, space, shape, prepare, finalize, tuple(examples),
                          preset_rank)


def check_keys(where: str, data: Any, allowed: tuple[str, ...]) -> dict:
    """A JSON object with only known keys, else a ConfigError naming the strays."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__} {data!r}")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return data


def non_default_dict(cfg: Any) -> dict:
    """Fields of a knob config that differ from their defaults, in the JSON form (a per-block tuple as a list)."""
    out = {}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if value != f.default:
            out[f.name] = perblock.to_json(value)
    return out


#: the two parts of a transformer block that per-part knobs (sparsity, precision) set separately
PARTS = PerPart._fields


class PartsConfig:
    """Mixin of a knob set once per part (``attn``, ``mlp``), with one default value.

    The subclass is a frozen dataclass with fields ``attn`` and ``mlp`` and names its
    knob (``KNOB``) and its identity value (``DEFAULT``); identity, the JSON form, the
    one-line summary and the table columns follow from those.
    """

    KNOB: str
    DEFAULT: str
    #: the subclass's fields besides the parts (in the JSON form too)
    OTHER_FIELDS: tuple[str, ...] = ()

    def is_identity(self) -> bool:
        """True when every part keeps the default."""
        return all(getattr(self, p) == self.DEFAULT for p in PARTS)

    def to_dict(self) -> dict:
        """JSON form (only non-default fields)."""
        return non_default_dict(self)

    @classmethod
    def from_dict(cls, data: Any):
        """Inverse of :meth:`to_dict`."""
        return cls(**check_keys(cls.KNOB, data, (*PARTS, *cls.OTHER_FIELDS)))

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
