"""Block depth knob: drop the least important transformer blocks."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitsearch.spaces.errors import ConfigError

from vitsearch.spaces.knobs.base import Context, check_keys, check_positive_int, non_default_dict, register

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
    order = sorted(range(depth), key=lambda i: scores[i])  # least important first
    dropped = sorted(order[:depth - cfg.keep])
    model.blocks = nn.Sequential(*[b for i, b in enumerate(blocks) if i not in dropped])
    ctx.info["criterion"]["depth"] = criterion
    ctx.info["depth"] = {"dropped": dropped, "kept": [i for i in range(depth) if i not in dropped],
                         "scores": [round(float(s), 6) for s in scores]}


register("depth", DepthConfig, prepare=apply_depth, examples=({"keep": 4},))
