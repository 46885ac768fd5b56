"""SearchSpace: a study file's ``space:`` section turned into Optuna distributions.

Distributions are static (the same names and choices on every trial) because NSGA-II
and TPE handle dynamic spaces badly; rules that tie knobs together (kv_heads must
divide the kept heads, token blocks must exist after depth dropping) are enforced by
the mapping from parameters to a config, so every config that comes out is valid.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.heads import divisors
from vitsearch.spaces.knobs.precision import PRECISIONS, supported_precisions
from vitsearch.spaces.knobs.sparsity import parse_sparsity
from vitsearch.spaces.vit.counts import MIN_MERGE_SHARE
from vitsearch.spaces.vit.dims import VitDims

#: YAML's true is not 1 here, nor 2.0 a count: a typo must not pass as a number
Int = Annotated[int, Strict()]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class DepthSpace(BaseModel):
    """Blocks kept: an integer range; None = from half the model's depth to all of it."""

    model_config = _STRICT
    keep_min: Int | None = Field(None, ge=1)
    keep_max: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "DepthSpace":
        if self.keep_min is not None and self.keep_max is not None and self.keep_min > self.keep_max:
            raise ValueError(f"keep_min {self.keep_min} is above keep_max {self.keep_max}; expected keep_min <= keep_max")
        return self


class HeadsSpace(BaseModel):
    """Query heads kept and K/V head counts. None = [2/3 of the heads, all heads] and every divisor."""

    model_config = _STRICT
    keep: list[Int] | None = Field(None, min_length=1)
    kv_heads: list[Int] | None = Field(None, min_length=1)

    @field_validator("keep", "kv_heads")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(x < 1 for x in v):
            raise ValueError(f"{v} has a value below 1; expected positive head counts")
        return None if v is None else sorted(set(v))


class TokensSpace(BaseModel):
    """Token methods, the blocks where a reduction may happen and the shares to choose from."""

    model_config = _STRICT
    methods: list[Literal["merge", "prune"]] = Field(default_factory=lambda: ["merge"], min_length=1)
    blocks: list[Int] | None = Field(None, description="None = [depth // 4, depth // 2]")
    shares: list[float] = Field(default_factory=lambda: [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> "TokensSpace":
        if self.blocks is not None and any(b < 0 for b in self.blocks):
            raise ValueError(f"blocks {self.blocks} has a negative index; expected block indices >= 0")
        if any(not 0.0 < s <= 1.0 for s in self.shares):
            raise ValueError(f"shares {self.shares} has a value outside (0, 1]")
        if "merge" in self.methods and min(self.shares) < MIN_MERGE_SHARE:
            raise ValueError(f"shares {self.shares} go below {MIN_MERGE_SHARE}, which method 'merge' cannot "
                             "reach in one block; raise them or use methods: [prune]")
        return self


def _check_choices(where: str, values: list[str], check) -> list[str]:
    for v in values:
        check(where, v)
    return list(dict.fromkeys(values))


class SparsitySpace(BaseModel):
    """Sparsity choices per part (dense | 2:4 | unstructured:<p> | structured:<p> for mlp)."""

    model_config = _STRICT
    attn: list[str] = Field(default_factory=lambda: ["dense", "2:4"], min_length=1)
    mlp: list[str] = Field(default_factory=lambda: ["dense", "2:4", "structured:0.25", "structured:0.5"], min_length=1)

    @field_validator("attn", "mlp")
    @classmethod
    def _parse(cls, v: list[str], info) -> list[str]:
        try:
            return _check_choices(f"sparsity.{info.field_name}", v, parse_sparsity)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class PrecisionSpace(BaseModel):
    """Precision choices per part."""

    model_config = _STRICT
    attn: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    mlp: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)

    @field_validator("attn", "mlp")
    @classmethod
    def _known(cls, v: list[str], info) -> list[str]:
        bad = [x for x in v if x not in PRECISIONS]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a precision; expected some of {', '.join(PRECISIONS)}")
        return list(dict.fromkeys(v))


class SpaceSpec(BaseModel):
    """The ``space:`` section of a study file; every knob has a default sub-space."""

    model_config = _STRICT
    depth: DepthSpace = Field(default_factory=DepthSpace)
    heads: HeadsSpace = Field(default_factory=HeadsSpace)
    tokens: TokensSpace = Field(default_factory=TokensSpace)
    sparsity: SparsitySpace = Field(default_factory=SparsitySpace)
    precision: PrecisionSpace = Field(default_factory=PrecisionSpace)


class SearchSpace:
    """Static Optuna distributions over the five knobs, and their mapping to configs.

    Parameter names: ``depth.keep``, ``heads.keep``, ``heads.kv``, ``tokens.method``,
    ``tokens.share@<block>``, ``sparsity.attn``, ``sparsity.mlp``, ``precision.attn``,
    ``precision.mlp``. A knob with one choice has no parameter. ``heads.kv`` is an upper
    bound: the K/V head count used is the largest allowed choice dividing the kept heads.
    """

    def __init__(self, spec: SpaceSpec | dict | None, dims: VitDims, device: str = "cpu",
                 precisions: tuple[str, ...] | None = None) -> None:
        self.spec = spec if isinstance(spec, SpaceSpec) else SpaceSpec.model_validate(spec or {})
        self.dims, self.device = dims, str(device)
        #: what the deployment runtime realises (default: eager PyTorch on ``device``)
        self.precisions = precisions or supported_precisions(self.device)
        s, d = self.spec, dims
        self.keep_range = (s.depth.keep_min or math.ceil(d.depth / 2), s.depth.keep_max or d.depth)
        self.head_keep = s.heads.keep or sorted({d.num_heads - d.num_heads // 3, d.num_heads})
        self.kv_choices = s.heads.kv_heads or divisors(d.num_heads)
        self.token_blocks = sorted(set(s.tokens.blocks if s.tokens.blocks is not None
                                       else [d.depth // 4, d.depth // 2]))
        self.shares = sorted(set(s.tokens.shares), reverse=True)
        self._check()

    @classmethod
    def from_spec(cls, spec: SpaceSpec | dict | None, model: Any, device: str = "cpu",
                  precisions: tuple[str, ...] | None = None) -> "SearchSpace":
        """Build for a timm ViT (reads its depth, heads and token counts)."""
        return cls(spec, VitDims.of(model), device, precisions)

    def _check(self) -> None:
        d, lo, hi = self.dims, *self.keep_range
        if not 1 <= lo <= hi <= d.depth:
            raise ConfigError(f"space.depth: keep range {lo}..{hi} is not allowed for a model with {d.depth} "
                              f"blocks; expected 1 <= keep_min <= keep_max <= {d.depth}")
        if max(self.head_keep) > d.num_heads:
            raise ConfigError(f"space.heads.keep: {max(self.head_keep)} is not allowed; the model has "
                              f"{d.num_heads} heads")
        for k in self.head_keep:
            if not any(k % kv == 0 for kv in self.kv_choices):
                raise ConfigError(f"space.heads.kv_heads: none of {self.kv_choices} divides heads.keep {k}; "
                                  f"add one of {', '.join(map(str, divisors(k)))}")
        if self.token_blocks and max(self.token_blocks) >= hi:
            raise ConfigError(f"space.tokens.blocks: {max(self.token_blocks)} is not allowed; blocks must be "
                              f"below depth keep_max {hi}")
        ok = self.precisions
        for part in ("attn", "mlp"):
            bad = [p for p in getattr(self.spec.precision, part) if p not in ok]
            if bad:
                raise ConfigError(f"space.precision.{part}: {bad[0]!r} cannot run on device {self.device!r}; "
                                  f"it supports {', '.join(ok)}")

    # ---- distributions and mapping ---------------------------------------------------
    def _choices(self) -> dict[str, list]:
        s = self.spec
        out: dict[str, list] = {
            "heads.keep": self.head_keep, "heads.kv": self.kv_choices, "tokens.method": list(s.tokens.methods),
            **{f"tokens.share@{b}": self.shares for b in self.token_blocks},
            "sparsity.attn": s.sparsity.attn, "sparsity.mlp": s.sparsity.mlp,
            "precision.attn": s.precision.attn, "precision.mlp": s.precision.mlp,
        }
        return {k: list(v) for k, v in out.items() if len(v) > 1}

    def distributions(self) -> dict[str, Any]:
        """Parameter name -> Optuna distribution (static; for samplers and Ray's OptunaSearch)."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        out: dict[str, Any] = {}
        lo, hi = self.keep_range
        if lo < hi:
            out["depth.keep"] = IntDistribution(lo, hi)
        out.update({k: CategoricalDistribution(v) for k, v in self._choices().items()})
        return out

    def suggest(self, trial: Any) -> CompressionConfig:
        """Draw one valid config from an Optuna trial."""
        from optuna.distributions import IntDistribution

        params = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high)
            else:
                params[name] = trial.suggest_categorical(name, dist.choices)
        return self.config_from_params(params)

    def config_from_params(self, params: dict[str, Any]) -> CompressionConfig:
        """Map parameter values (missing ones take the knob's only choice) to a config."""
        d, s = self.dims, self.spec
        get = lambda name, default: params.get(name, default)  # noqa: E731
        keep = int(get("depth.keep", self.keep_range[1]))
        heads = int(get("heads.keep", self.head_keep[0]))
        kv = self._kv_for(heads, int(get("heads.kv", self.kv_choices[0])))
        schedule = {b: float(get(f"tokens.share@{b}", self.shares[0])) for b in self.token_blocks if b < keep}
        schedule = {b: v for b, v in schedule.items() if v < 1.0}
        method = get("tokens.method", s.tokens.methods[0])
        return CompressionConfig.from_dict({
            "depth": {} if keep == d.depth else {"keep": keep},
            "heads": {k: v for k, v in (("keep", heads), ("kv_heads", kv)) if v != (d.num_heads if k == "keep" else heads)},
            "tokens": {"method": method, "schedule": {str(b): v for b, v in schedule.items()}} if schedule else {},
            "sparsity": {p: get(f"sparsity.{p}", getattr(s.sparsity, p)[0]) for p in ("attn", "mlp")},
            "precision": {p: get(f"precision.{p}", getattr(s.precision, p)[0]) for p in ("attn", "mlp")},
        })

    def _kv_for(self, heads: int, choice: int) -> int:
        allowed = [kv for kv in self.kv_choices if heads % kv == 0]
        below = [kv for kv in allowed if kv <= choice]
        return max(below) if below else min(allowed)

    def params_for(self, config: CompressionConfig) -> dict[str, Any]:
        """Parameters that map to ``config`` (for ``study.enqueue_trial``); ConfigError if outside the space."""
        d = self.dims
        keep = config.depth.keep or d.depth
        heads = config.heads.keep or d.num_heads
        kv = config.heads.kv_heads or heads
        shares = dict(config.tokens.schedule)
        params: dict[str, Any] = {"depth.keep": keep, "heads.keep": heads, "heads.kv": kv,
                                  "tokens.method": config.tokens.method,
                                  **{f"tokens.share@{b}": shares.get(b, 1.0) for b in self.token_blocks},
                                  **{f"sparsity.{p}": getattr(config.sparsity, p) for p in ("attn", "mlp")},
                                  **{f"precision.{p}": getattr(config.precision, p) for p in ("attn", "mlp")}}
        dists = self.distributions()
        params = {k: v for k, v in params.items() if k in dists}
        inside = all(d.low <= params[k] <= d.high if hasattr(d, "low") else params[k] in d.choices
                     for k, d in dists.items())
        if not inside or self.config_from_params(params) != config:
            raise ConfigError(f"config {config.summary()!r} is not inside this search space")
        return params

    # ---- size and presets ----------------------------------------------------------
    def size(self) -> int:
        """Number of distinct configs the space can produce."""
        pairs = {(h, self._kv_for(h, c)) for h in self.head_keep for c in self.kv_choices}
        rest = len(pairs)
        for part in ("attn", "mlp"):
            rest *= len(getattr(self.spec.sparsity, part)) * len(getattr(self.spec.precision, part))
        n_methods, n_shares = len(self.spec.tokens.methods), len(self.shares)
        total = 0
        for keep in range(self.keep_range[0], self.keep_range[1] + 1):
            n_blocks = sum(1 for b in self.token_blocks if b < keep)
            if 1.0 in self.shares:
                tokens = n_methods * (n_shares ** n_blocks - 1) + 1
            else:
                tokens = n_methods * n_shares ** n_blocks if n_blocks else 1
            total += tokens * rest
        return total

    def presets(self) -> list[CompressionConfig]:
        """The least-compressed config (the identity when the space holds it) and a few strong ones."""
        return [self.config_from_params(p) for p in self.preset_params()]

    def preset_params(self) -> list[dict[str, Any]]:
        """Parameters of :meth:`presets`, deduplicated, ready for ``study.enqueue_trial``."""
        dists = self.distributions()
        choices = self._choices()

        def pick(name: str, prefer: list) -> Any:
            opts = choices.get(name, [])
            return next((p for p in prefer if p in opts), opts[0] if opts else None)

        lo, hi = self.keep_range
        base = {"depth.keep": hi, "heads.keep": max(self.head_keep), "heads.kv": max(self.kv_choices),
                "tokens.method": self.spec.tokens.methods[0],
                **{f"tokens.share@{b}": max(self.shares) for b in self.token_blocks},
                "sparsity.attn": pick("sparsity.attn", ["dense"]), "sparsity.mlp": pick("sparsity.mlp", ["dense"]),
                "precision.attn": pick("precision.attn", ["fp32"]), "precision.mlp": pick("precision.mlp", ["fp32"])}
        int8 = {f"precision.{p}": pick(f"precision.{p}", ["int8", "int8-weight", "fp32"]) for p in ("attn", "mlp")}
        tokens = {f"tokens.share@{b}": min(self.shares, key=lambda s: abs(s - 0.7)) for b in self.token_blocks}
        strong = {**int8, **tokens, "depth.keep": max(lo, math.ceil(0.75 * hi)), "heads.kv": min(self.kv_choices)}
        variants = [base, {**base, **int8}, {**base, "heads.kv": min(self.kv_choices)}, {**base, **tokens},
                    {**base, "depth.keep": max(lo, hi - max(1, hi // 4))}, {**base, **strong}]
        out, seen = [], set()
        for v in variants:
            params = {k: val for k, val in v.items() if k in dists and val is not None}
            key = self.config_from_params(params)
            if key not in seen:
                seen.add(key)
                out.append(params)
        return out
