"""CompressionConfig: one frozen, validated, versioned sub-config per knob.

JSON form (``{}`` is the identity)::

    {"schema_version": 1,
     "depth":    {"keep": 6},
     "heads":    {"kv_heads": 2, "keep": 6},
     "tokens":   {"method": "merge", "schedule": {"2": 0.7, "4": 0.7}},
     "sparsity": {"attn": "dense", "mlp": "2:4"},
     "precision":{"attn": "fp32", "mlp": "int8"}}

``precision.base`` (default fp32) is what the rest of the model runs in: a study whose
``model.precision`` is bf16 writes ``"precision": {"mlp": "int8", "base": "bf16"}``.

Schema versions: 1 sets every block alike; 2 adds the per-block form, one entry per
kept block (``"heads": {"keep": [6, 5, 4, 4, 3, 3]}``, ``"sparsity": {"mlp_keep":
[288, 240, ...]}``, ``"precision": {"mlp": ["int8", "fp32", ...]}``); 3 adds
``precision.base``. A config writes the lowest version that expresses it, so a uniform
config's JSON is what version 1 wrote and older readers refuse only what they cannot read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import FIELDS, ORDER, REGISTRY
from vitsearch.spaces.knobs.depth import DepthConfig
from vitsearch.spaces.knobs.heads import HeadsConfig
from vitsearch.spaces.knobs.precision import PrecisionConfig
from vitsearch.spaces.knobs.sparsity import SparsityConfig
from vitsearch.spaces.knobs.tokens import TokensConfig, check_schedule_fits

SCHEMA_VERSION = 3
#: the version that added per-block lists (heads.keep, heads.kv_heads, sparsity.mlp_keep)
PER_BLOCK_VERSION = 2
#: the version that added ``precision.base`` (the precision the rest of the model runs in)
BASE_PRECISION_VERSION = 3


@dataclass(frozen=True)
class CompressionConfig:
    """What to compress and how; every field defaults to "unchanged".

    One field per registered knob, in :data:`~.knobs.base.FIELDS` order, typed for
    readers and checked against the registry by the tests.
    """

    depth: DepthConfig = field(default_factory=DepthConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)

    def __post_init__(self) -> None:
        for name in FIELDS:
            cls = REGISTRY[name].config_cls
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise ConfigError(f"{name}: {value!r} is not allowed; expected a {cls.__name__} or a JSON object")
        if self.depth.keep is not None:  # the rules across knobs a config alone can check
            check_schedule_fits(self.tokens, self.depth.keep)
            perblock.check_length("heads.keep", self.heads.keep, self.depth.keep)
            perblock.check_length("heads.kv_heads", self.heads.kv_heads, self.depth.keep)
            perblock.check_length("sparsity.mlp_keep", self.sparsity.mlp_keep, self.depth.keep)
            self.precision.per_block(self.depth.keep)

    # ---- JSON -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready dict: schema_version (the lowest that expresses the config) plus the non-identity knobs."""
        out: dict[str, Any] = {"schema_version": self.schema_version()}
        for name in ORDER:
            sub = getattr(self, name).to_dict()
            if sub:
                out[name] = sub
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "CompressionConfig":
        """Build from the JSON form; unknown keys and newer schema versions are refused."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config: expected a JSON object, got {type(data).__name__} {data!r}")
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ConfigError(f"config.schema_version: {version!r} is not allowed; this vitsearch reads "
                              f"version 1..{SCHEMA_VERSION} (upgrade vitsearch for newer configs)")
        unknown = sorted(set(data) - set(REGISTRY))
        if unknown:
            raise ConfigError(f"config: unknown knob(s) {', '.join(map(str, unknown))}; "
                              f"allowed: schema_version, {', '.join(ORDER)}")
        config = cls(**{name: REGISTRY[name].config_cls.from_dict(value) for name, value in data.items()})
        if config.schema_version() > version:
            what = ("precision.base" if config.schema_version() == BASE_PRECISION_VERSION else
                    "per-block lists (heads.keep, heads.kv_heads, sparsity.mlp_keep or precision.attn/mlp)")
            raise ConfigError(f"config.schema_version: {version} is not allowed with {what}; it needs version "
                              f"{config.schema_version()}")
        return config

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "CompressionConfig":
        """Parse JSON text; a syntax error is a ConfigError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config: {text[:80]!r} is not valid JSON ({exc.msg} at char {exc.pos})") from None
        return cls.from_dict(data)

    # ---- views ------------------------------------------------------------------
    def schema_version(self) -> int:
        """The lowest schema version that expresses this config."""
        if self.precision.base != "fp32":
            return BASE_PRECISION_VERSION
        return PER_BLOCK_VERSION if self.is_per_block() else 1

    def is_per_block(self) -> bool:
        """True when some knob gives blocks different values (a per-block list)."""
        return self.heads.is_per_block() or self.sparsity.is_per_block() or self.precision.is_per_block()

    def is_identity(self) -> bool:
        """True when compressing with this config changes nothing."""
        return all(getattr(self, name).is_identity() for name in ORDER)

    @classmethod
    def reference(cls, base_precision: str = "fp32") -> "CompressionConfig":
        """The uncompressed model as deployed in ``base_precision`` (fp32: the identity config).

        What every ratio, the predictor, the no-gain check and ``pick``'s speed-up are
        measured against: on a GPU study the model in bf16, not in fp32.
        """
        from vitsearch.spaces.knobs.precision import reference_precision

        return cls() if base_precision == "fp32" else cls(precision=reference_precision(base_precision))

    def on_base(self, base_precision: str) -> "CompressionConfig":
        """This config in a study whose model runs in ``base_precision``: its fp32 parts and rest in the base.

        A config that names a base already, or an fp32 base, is returned as it is.
        """
        from dataclasses import replace

        p = self.precision
        if base_precision == "fp32" or p.base != "fp32":
            return self
        from vitsearch.spaces.knobs import perblock

        parts = {part: perblock.map_entries(getattr(p, part), lambda v: base_precision if v == "fp32" else v)
                 for part in ("attn", "mlp")}
        return replace(self, precision=type(p)(base=base_precision, **parts))

    def is_reference(self, base_precision: str = "fp32") -> bool:
        """Whether this is the uncompressed model in ``base_precision`` (or the identity: the fp32 teacher)."""
        return self.is_identity() or self == CompressionConfig.reference(base_precision)

    def is_uncompressed(self) -> bool:
        """Whether this is the uncompressed model in the base precision it names (a study's trial 0)."""
        return self.is_reference(self.precision.base)

    def summary(self) -> str:
        """Short human label, e.g. ``depth 6 | kv 2 | tokens merge@2:0.7 | mlp 2:4 | mlp int8``."""
        parts = [s for s in (getattr(self, name).summary() for name in ORDER) if s]
        return " | ".join(parts) or "identity"

    def knob_columns(self) -> dict[str, Any]:
        """Flat scalar columns (one group per knob) for trial tables."""
        out: dict[str, Any] = {}
        for name in ORDER:
            out.update(getattr(self, name).columns())
        return out
