"""Head knob: prune query heads by importance, then group K/V heads (GQA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitsearch.spaces.errors import ConfigError, ModelError

from vitsearch.spaces.knobs.base import Context, check_keys, check_positive_int, non_default_dict, register

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class HeadsConfig:
    """``keep`` query heads kept (None = all); ``kv_heads`` K/V heads (None = one per kept head).

    ``kv_heads`` must divide ``keep`` (or the model's head count when ``keep`` is None);
    that part is checked against the model in ``compress``.
    """

    kv_heads: int | None = None
    keep: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("heads.kv_heads", self.kv_heads)
        check_positive_int("heads.keep", self.keep)
        if self.keep is not None and self.kv_heads is not None and self.keep % self.kv_heads:
            raise ConfigError(f"heads.kv_heads: {self.kv_heads} is not allowed with heads.keep {self.keep}; "
                              f"kv_heads must divide keep (one of {', '.join(map(str, divisors(self.keep)))})")

    def is_identity(self) -> bool:
        """True when heads are neither pruned nor grouped."""
        return self.keep is None and self.kv_heads is None

    def to_dict(self) -> dict:
        """JSON form (only non-default fields)."""
        return non_default_dict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "HeadsConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**check_keys("heads", data, ("kv_heads", "keep")))

    def summary(self) -> str | None:
        """e.g. ``heads 4 kv 2``."""
        parts = []
        if self.keep is not None:
            parts.append(f"heads {self.keep}")
        if self.kv_heads is not None:
            parts.append(f"kv {self.kv_heads}")
        return " ".join(parts) or None

    def columns(self) -> dict:
        """Flat scalar columns for tables."""
        return {"heads_keep": self.keep, "heads_kv": self.kv_heads}


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


# ---- handler ---------------------------------------------------------------------
def apply_heads(model: nn.Module, cfg: HeadsConfig, ctx: Context) -> None:
    """Prune query heads to ``keep`` by importance, then mean-pool K/V into ``kv_heads`` groups."""
    if cfg.is_identity():
        return
    from vitsearch.spaces.vit import adapter as vit, ops
    from vitsearch.spaces.vit.importance import head_scores

    heads = {b.attn.num_heads for b in model.blocks}
    if len(heads) != 1:
        raise ModelError(f"heads: blocks have different head counts {sorted(heads)}; the heads knob needs one count")
    (n_heads,) = heads
    keep = n_heads if cfg.keep is None else cfg.keep
    kv = keep if cfg.kv_heads is None else cfg.kv_heads
    if keep > n_heads:
        raise ConfigError(f"heads.keep: {keep} is not allowed; the model has {n_heads} heads (expected 1..{n_heads})")
    if keep % kv:
        raise ConfigError(f"heads.kv_heads: {kv} is not allowed with {keep} query heads; kv_heads must divide "
                          f"it (one of {', '.join(map(str, divisors(keep)))})")
    kept = None
    if keep < n_heads:
        scores, criterion = head_scores(model, ctx.batches, ctx.device)
        ctx.info["criterion"]["heads"] = criterion
        kept = [ops.top_indices(s, keep) for s in scores]
    for i, block in enumerate(model.blocks):
        attn = vit.to_vitsearch_attention(block)
        if attn.num_kv_heads != attn.num_heads:
            raise ModelError("heads: this model's K/V heads are already grouped; compress the uncompressed model")
        if kept is not None:
            vit.prune_heads(attn, kept[i].to(attn.qkv.weight.device))
        if kv < keep:
            # Consecutive heads share K/V, as in GQA; grouping heads by weight similarity
            # was tried and did not help (heads' bases are not aligned).
            vit.group_kv(attn, kv)
    ctx.info["heads"] = {"num_heads": keep, "num_kv_heads": kv, "base_heads": n_heads,
                         "kept": None if kept is None else [k.tolist() for k in kept]}


register("heads", HeadsConfig, prepare=apply_heads,
         examples=({"keep": 2, "kv_heads": 1}, {"kv_heads": 1}, {"keep": 2}))
