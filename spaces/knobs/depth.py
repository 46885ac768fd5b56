"""Block depth knob: drop the least important transformer blocks."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.vit.blocks import BlockShape
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.spaces.knobs.base import Context, check_keys, check_positive_int, non_default_dict, register
from vitsearch.spaces.knobs.subspace import STRICT, Int, KnobSpace, Presets

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DepthConfig:
    """``keep``: number of blocks kept (None = all)."""

    keep: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("depth.keep", self.keep)

    def is_identity(self) -> bool:
        """True when no block is dropped by the config itself."""
        return self.keep is None

    def to_dict(self) -> dict:
        """JSON form (only non-default fields)."""
        return non_default_dict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "DepthConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**check_keys("depth", data, ("keep",)))

    def summary(self) -> str | None:
        """e.g. ``depth 6``."""
        return None if self.keep is None else f"depth {self.keep}"

    def columns(self) -> dict:
        """Flat scalar columns for tables."""
        return {"depth_keep": self.keep}


# ---- search sub-space --------------------------------------------------------------
class DepthSpace(BaseModel):
    """Blocks kept: an integer range; None = from half the model's depth to all of it."""

    model_config = STRICT
    keep_min: Int | None = Field(None, ge=1)
    keep_max: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "DepthSpace":
        if self.keep_min is not None and self.keep_max is not None and self.keep_min > self.keep_max:
            raise ValueError(f"keep_min {self.keep_min} is above keep_max {self.keep_max}; expected keep_min <= keep_max")
        return self


class DepthChoices(KnobSpace):
    """Parameter ``depth.keep``: an integer in :attr:`keep_range`."""

    def __init__(self, spec: DepthSpace, dims: VitDims, target: Any, earlier: dict) -> None:
        super().__init__(spec, dims, target, earlier)
        self.keep_range = (spec.keep_min or math.ceil(dims.depth / 2), spec.keep_max or dims.depth)

    def check(self) -> None:
        """The range must lie within the model's blocks."""
        (lo, hi), depth = self.keep_range, self.dims.depth
        if not 1 <= lo <= hi <= depth:
            raise ConfigError(f"space.depth: keep range {lo}..{hi} is not allowed for a model with {depth} "
                              f"blocks; expected 1 <= keep_min <= keep_max <= {depth}")

    def distributions(self) -> dict[str, Any]:
        """An integer distribution over the range, unless it holds one value."""
        from optuna.distributions import IntDistribution

        lo, hi = self.keep_range
        return {"depth.keep": IntDistribution(lo, hi)} if lo < hi else {}

    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """``{"keep": n}``, or {} when every block is kept."""
        keep = int(params.get("depth.keep", self.keep_range[1]))
        return {} if keep == self.dims.depth else {"keep": keep}

    def encode(self, config: DepthConfig) -> dict[str, Any]:
        """The kept block count."""
        return {"depth.keep": config.keep or self.dims.depth}

    def count(self, earlier: dict[str, Any]) -> int:
        """One sub-config per block count in the range."""
        return len(self.outcomes())

    def outcomes(self) -> list[DepthConfig]:
        """One sub-config per block count in the range (the tokens knob reads it)."""
        lo, hi = self.keep_range
        return [DepthConfig.from_dict(self.decode({"depth.keep": k}, {})) for k in range(lo, hi + 1)]

    def presets(self) -> Presets:
        """All of the range's blocks; alone a quarter fewer (at least one); strong three quarters."""
        lo, hi = self.keep_range
        return Presets(least={"depth.keep": hi}, alone={"depth.keep": max(lo, hi - max(1, hi // 4))},
                       strong={"depth.keep": max(lo, math.ceil(0.75 * hi))})


# ---- cost -------------------------------------------------------------------------
def shape_depth(blocks: list[BlockShape], cfg: DepthConfig, dims: VitDims) -> list[BlockShape]:
    """The first ``keep`` blocks.

    Which blocks go is decided by importance on calibration data; while the blocks are
    alike, any ``keep`` of them have the first ``keep``'s shapes.
    """
    kept = len(blocks) if cfg.keep is None else cfg.keep
    if kept > len(blocks):
        raise ConfigError(f"depth.keep: {kept} is not allowed for a model with {len(blocks)} blocks; "
                          f"expected 1..{len(blocks)}")
    return blocks[:kept]


# ---- handler ---------------------------------------------------------------------
#: base model -> {weights_digest: (scores, criterion)}; weak so cached models can be freed.
_RANKINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def block_ranking(model: nn.Module, ctx: Context) -> tuple[list[float], str]:
    """Block importance scores (cached per base model, weights and calibration data)."""
    from vitsearch.spaces.vit.importance import block_scores, weights_digest

    key = weights_digest(model, ctx.batches)
    try:
        per_model = _RANKINGS.setdefault(ctx.base, {})
    except TypeError:  # not weak-referenceable: no cache
        per_model = {}
    if key not in per_model:
        per_model[key] = block_scores(model, ctx.batches, ctx.device)
    return per_model[key]


def dropped_blocks(scores: list[float], keep: int) -> list[int]:
    """Indices (ascending) of the ``len(scores) - keep`` blocks with the lowest scores: those depth drops."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])  # least important first
    return sorted(order[:len(scores) - keep])


def apply_depth(model: nn.Module, cfg: DepthConfig, ctx: Context) -> None:
    """Drop the ``depth - keep`` least important blocks (in place on the working copy)."""
    from torch import nn

    blocks = list(model.blocks)
    depth = len(blocks)
    if cfg.keep is None or cfg.keep == depth:
        return
    if cfg.keep > depth:
        raise ConfigError(f"depth.keep: {cfg.keep} is not allowed for a model with {depth} blocks; expected 1..{depth}")
    scores, criterion = block_ranking(model, ctx)
    dropped = dropped_blocks(scores, cfg.keep)
    model.blocks = nn.Sequential(*[b for i, b in enumerate(blocks) if i not in dropped])
    ctx.info["criterion"]["depth"] = criterion
    ctx.info["depth"] = {"dropped": dropped, "kept": [i for i in range(depth) if i not in dropped],
                         "scores": [round(float(s), 6) for s in scores]}


register("depth", DepthConfig, space_spec=DepthSpace, space=DepthChoices, shape=shape_depth, prepare=apply_depth,
         examples=({"keep": 4},), preset_rank=3)
