"""A study's ``space.allocation``: heads and MLP widths set alike in every block, or per block by saliency.

``mode: uniform`` (the default) leaves the space as the knobs define it. ``mode:
saliency`` replaces the per-config head count (``heads.keep``) and the structured MLP
shares (``sparsity.mlp: structured:<p>``) by two global budgets the sampler draws,
``allocation.heads_removed`` and ``allocation.mlp_removed`` (shares of the kept
blocks' heads and MLP channel groups removed); the global allocator
(:mod:`vitsearch.spaces.allocate`) turns them into explicit per-block heads and widths,
so the config a trial records says what each block keeps. ``heads.kv`` stays a
parameter: each block groups its K/V into the largest divisor of its heads at most it.
With ``budget: macs`` the sampler draws one budget instead, ``allocation.macs_kept`` (the
share of the kept blocks' head and MLP MACs kept), and the allocator chooses how much of it
comes from heads and how much from channels, by saliency per MAC across both types.

``precision: sensitivity`` (independent of ``mode``) replaces the per-part precision
choices by one budget, ``allocation.quantised``: the share of the kept blocks' linear
groups (each block's attention linears, each block's MLP linears) that run in the study's
quantised precision (the first of int8, int8-weight, int4-weight its ``space.precision``
lists); which ones is decided by each group's measured sensitivity per MAC saved
(:mod:`vitsearch.spaces.mixedprecision`, as NVIDIA ModelOpt's AutoQuantize chooses
per-layer formats), the rest stay in the base precision.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vitsearch.spaces.allocate import GROUP, Allocation, Saliency, allocate, allocate_macs, least_macs_ratio, macs_share
from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.perblock import expand
from vitsearch.spaces.knobs.sparsity import parse_sparsity
from vitsearch.spaces.knobs.subspace import Int, Presets, Section, categorical
from vitsearch.spaces.vit.dims import VitDims

HEADS, MLP = "allocation.heads_removed", "allocation.mlp_removed"
MACS = "allocation.macs_kept"
QUANTISED = "allocation.quantised"
#: the quantised precisions, in the order the sensitivity mode prefers them
QUANTISED_KINDS = ("int8", "int8-weight", "int4-weight")


class AllocationSpec(Section):
    """``space.allocation``: ``mode`` uniform | saliency; with saliency, the budgets to draw and the MLP channel group."""

    mode: Literal["uniform", "saliency"] = "uniform"
    #: ``types``: one share removed per structure type; ``macs``: one share of the MACs kept, across both types
    budget: Literal["types", "macs"] = "types"
    heads_removed: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5], min_length=1)
    mlp_removed: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75], min_length=1)
    macs_kept: list[float] = Field(default_factory=lambda: [1.0, 0.8, 0.65, 0.5, 0.4], min_length=1)
    group: Int = Field(GROUP, ge=1)
    precision: Literal["uniform", "sensitivity"] = "uniform"
    quantised: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], min_length=1)

    UNWRITTEN = ("budget", "macs_kept")

    @field_validator("quantised")
    @classmethod
    def _quantised_shares(cls, v: list[float]) -> list[float]:
        if any(isinstance(x, bool) or not 0.0 <= x <= 1.0 for x in v):
            raise ValueError(f"{v} has a share outside [0, 1]; expected shares of the linear groups quantised, e.g. 0.5")
        return sorted(set(float(x) for x in v))

    @field_validator("macs_kept")
    @classmethod
    def _kept_shares(cls, v: list[float]) -> list[float]:
        if any(isinstance(x, bool) or not 0.0 < x <= 1.0 for x in v):
            raise ValueError(f"{v} has a share outside (0, 1]; expected shares of the block MACs kept, e.g. 0.5")
        return sorted(set(float(x) for x in v), reverse=True)

    @field_validator("heads_removed", "mlp_removed")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(isinstance(x, bool) or not 0.0 <= x < 1.0 for x in v):
            raise ValueError(f"{v} has a share outside [0, 1); expected shares of the structures removed, e.g. 0.25")
        return sorted(set(float(x) for x in v))

    @model_validator(mode="after")
    def _saliency_fields(self) -> "AllocationSpec":
        # compared with the defaults, not the fields set: a study is dumped and read back with every field
        default = AllocationSpec.model_construct()
        fields = ("budget", "heads_removed", "mlp_removed", "macs_kept", "group")
        extra = [f for f in fields if getattr(self, f) != getattr(default, f)]
        if self.mode == "uniform" and extra:
            raise ValueError(f"{', '.join(extra)} only apply with mode saliency; set mode: saliency or remove them")
        unused = {"types": ["macs_kept"], "macs": ["heads_removed", "mlp_removed"]}[self.budget]
        if [f for f in unused if f in extra]:
            raise ValueError(f"{', '.join(f for f in unused if f in extra)} does not apply with budget "
                             f"{self.budget}; remove it or set budget: {'macs' if self.budget == 'types' else 'types'}")
        if self.precision == "uniform" and self.quantised != default.quantised:
            raise ValueError("quantised only applies with precision sensitivity; set precision: sensitivity or "
                             "remove it")
        return self


def precision_knob_spec(spec: Any) -> tuple[Any, str]:
    """The knobs' part of ``spec`` under ``precision: sensitivity``: the precision knob at the base alone; and
    the quantised precision the budget uses. ConfigError when the study's precision choices name none."""
    from vitsearch.spaces.knobs.precision import PrecisionSpace

    listed = [*spec.precision.mlp, *spec.precision.attn]
    low = next((k for k in QUANTISED_KINDS if k in listed), None)
    if low is None:
        raise ConfigError(f"space.allocation.precision: sensitivity needs a quantised choice in space.precision "
                          f"(one of {', '.join(QUANTISED_KINDS)}); it lists {', '.join(dict.fromkeys(listed))}")
    # left "unset" so that the precision knob puts the study's base precision in place of fp32
    base_only = PrecisionSpace.model_construct(_fields_set=set(), attn=["fp32"], mlp=["fp32"])
    return spec.model_copy(update={"precision": base_only}), low


def knob_spec(spec: Any, dims: VitDims) -> Any:
    """The knobs' part of ``spec`` (a SpaceSpec) under saliency allocation: one head count (all heads) and
    no structured MLP shares, which the budgets replace (the default list's are left out); ConfigError when
    the study lists them itself."""
    if spec.heads.keep is not None:
        raise ConfigError("space.heads.keep: not used with space.allocation.mode saliency (the allocator sets each "
                          "block's heads from allocation.heads_removed); remove it")
    mlp = [v for v in spec.sparsity.mlp if parse_sparsity("sparsity.mlp", v)[0] != "structured"]
    if spec.sparsity.mlp != type(spec.sparsity)().mlp and len(mlp) < len(spec.sparsity.mlp):
        raise ConfigError("space.sparsity.mlp: structured:<p> is not used with space.allocation.mode saliency (the "
                          "allocator sets each block's MLP width from allocation.mlp_removed); remove it")
    return spec.model_copy(update={
        "heads": spec.heads.model_copy(update={"keep": [dims.num_heads]}),
        "sparsity": spec.sparsity.model_copy(update={"mlp": mlp or ["dense"]})})


class BudgetSpace:
    """The saliency mode's parameters and decoding (picklable: holds the measured saliency, not the model)."""

    def __init__(self, spec: AllocationSpec, dims: VitDims, saliency: Saliency) -> None:
        self.spec, self.dims, self.saliency = spec, dims, saliency
        self.macs = spec.budget == "macs"
        if self.macs:
            least = least_macs_ratio(dims, spec.group)
            if min(spec.macs_kept) < least:
                raise ConfigError(f"space.{MACS}: {min(spec.macs_kept)} is not allowed; every block keeps one head "
                                  f"and one channel group, so shares go down to {least:.3f}")
            return
        for name, shares, per_block in ((HEADS, spec.heads_removed, dims.num_heads),
                                        (MLP, spec.mlp_removed, dims.mlp_hidden // spec.group)):
            if max(shares) > (per_block - 1) / per_block:
                raise ConfigError(f"space.{name}: {max(shares)} is not allowed; every block keeps one of its "
                                  f"{per_block}, so shares go up to {(per_block - 1) / per_block:.3f}")

    def distributions(self) -> dict[str, Any]:
        """Categorical over each budget's shares."""
        if self.macs:
            return categorical({MACS: self.spec.macs_kept})
        return categorical({HEADS: self.spec.heads_removed, MLP: self.spec.mlp_removed})

    def _allocation(self, params: dict[str, Any], depth_keep: int | None) -> Allocation:
        if self.macs:
            return allocate_macs(self.saliency, self.dims, float(params.get(MACS, self.spec.macs_kept[0])),
                                 depth_keep)
        heads = float(params.get(HEADS, self.spec.heads_removed[0]))
        mlp = float(params.get(MLP, self.spec.mlp_removed[0]))
        return allocate(self.saliency, self.dims, heads, mlp, depth_keep)

    def apply(self, params: dict[str, Any], config: CompressionConfig) -> CompressionConfig:
        """``config`` (the knobs' decoding, heads all kept) with each block's heads and width from the budgets."""
        return self._allocation(params, config.depth.keep).apply(config, self.dims, config.heads.kv_heads)

    def encode(self, config: CompressionConfig) -> dict[str, Any]:
        """The budgets whose counts of removed heads and channel groups ``config`` has (the first such share;
        under ``budget: macs`` the first share allocating ``config``'s heads and widths, else the nearest in MACs)."""
        n = config.depth.keep or self.dims.depth
        heads = expand(config.heads.keep, n, self.dims.num_heads)
        hidden = expand(config.sparsity.mlp_keep, n, self.dims.mlp_hidden)
        if self.macs:
            for share in self.spec.macs_kept:
                a = self._allocation({MACS: share}, config.depth.keep)
                if (tuple(a.heads), tuple(a.hidden)) == (tuple(heads), tuple(hidden)):
                    return {MACS: share}
            ratio = macs_share(self.dims, heads, hidden, self.spec.group)
            return {MACS: min(self.spec.macs_kept, key=lambda s: abs(s - ratio))}
        removed = {HEADS: (n * self.dims.num_heads - sum(heads), n * self.dims.num_heads, self.spec.heads_removed),
                   MLP: ((n * self.dims.mlp_hidden - sum(hidden)) / self.spec.group,
                         n * self.dims.mlp_hidden // self.spec.group, self.spec.mlp_removed)}
        return {name: next((s for s in shares if round(s * total) == count), shares[0])
                for name, (count, total, shares) in removed.items()}

    def outcomes(self, depth_keep: int | None, kv: int | None) -> set[tuple]:
        """The distinct (heads, widths) the budgets give for one depth and K/V choice."""
        out = set()
        grid = ([{MACS: m} for m in self.spec.macs_kept] if self.macs else
                [{HEADS: h, MLP: m} for h in self.spec.heads_removed for m in self.spec.mlp_removed])
        for params in grid:
            cfg = self.apply(params, CompressionConfig.from_dict(
                {"depth": {} if depth_keep is None else {"keep": depth_keep}, "heads": {"kv_heads": kv}}))
            out.add((cfg.heads, cfg.sparsity.mlp_keep))
        return out

    def presets(self) -> Presets:
        """Nothing removed in the least preset; the middle shares in the strong one."""
        if self.macs:
            m = self.spec.macs_kept
            return Presets(least={MACS: m[0]}, strong={MACS: m[len(m) // 2]})
        h, m = self.spec.heads_removed, self.spec.mlp_removed
        return Presets(least={HEADS: h[0], MLP: m[0]}, strong={HEADS: h[len(h) // 2], MLP: m[len(m) // 2]})


class PrecisionBudget:
    """The sensitivity mode's parameter and decoding (picklable: holds the measured sensitivity, not the model)."""

    def __init__(self, shares: list[float], dims: VitDims, sensitivity: Any, low: str, base: str) -> None:
        if sensitivity.depth != dims.depth:
            raise ConfigError(f"space.allocation.precision: the sensitivity has {sensitivity.depth} blocks, the model "
                              f"{dims.depth}; measure it on the study's base model")
        self.shares, self.dims, self.sensitivity, self.low, self.base = shares, dims, sensitivity, low, base

    def distributions(self) -> dict[str, Any]:
        """Categorical over the quantised shares."""
        return categorical({QUANTISED: self.shares})

    def apply(self, params: dict[str, Any], config: CompressionConfig) -> CompressionConfig:
        """``config`` with each kept block's attention and MLP precision from the budget (the base elsewhere)."""
        from dataclasses import replace

        from vitsearch.spaces.knobs.precision import PrecisionConfig
        from vitsearch.spaces.mixedprecision import allocate_precision

        share = float(params.get(QUANTISED, self.shares[0]))
        attn, mlp = allocate_precision(self.sensitivity.kept(config.depth.keep), share, self._gains(config),
                                       low=self.low, high=self.base)
        return replace(config, precision=PrecisionConfig(attn=tuple(attn), mlp=tuple(mlp), base=self.base))

    def _gains(self, config: CompressionConfig) -> tuple[tuple[float, float], ...]:
        """MACs per token of each kept block's attention and MLP linears: what quantising them speeds up."""
        from vitsearch.spaces.blocks import block_shapes

        return tuple((float(4 * b.embed_dim * b.q_heads * b.head_dim), float(2 * b.embed_dim * b.mlp_hidden))
                     for b in block_shapes(config, self.dims))

    def encode(self, config: CompressionConfig) -> dict[str, Any]:
        """The share whose allocation ``config`` has (the first share giving as many quantised groups)."""
        n = config.depth.keep or self.dims.depth
        low = sum(v == self.low for block in config.precision.per_block(n) for v in block)
        return {QUANTISED: next((s for s in self.shares if round(s * 2 * n) == low), self.shares[0])}

    def count(self, depth_keep: int | None) -> int:
        """Distinct allocations the shares give for one depth."""
        n = depth_keep or self.dims.depth
        return len({round(s * 2 * n) for s in self.shares})

    def presets(self) -> Presets:
        """Nothing quantised in the least preset; the middle share in the strong one."""
        s = self.shares
        return Presets(least={QUANTISED: s[0]}, strong={QUANTISED: s[len(s) // 2]})
