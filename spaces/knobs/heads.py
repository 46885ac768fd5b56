"""Head knob: prune query heads by importance, then group K/V heads (GQA)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from vitsearch.spaces.errors import ConfigError, ModelError
from vitsearch.spaces.vit.blocks import BlockShape, each_block, with_fields
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import Context, check_keys, non_default_dict, register
from vitsearch.spaces.knobs.subspace import STRICT, Int, KnobSpace, Presets, categorical

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class HeadsConfig:
    """``keep`` query heads kept (None = all); ``kv_heads`` K/V heads (None = one per kept head).

    Each is one int for every kept block or a list with one entry per kept block
    (:mod:`.perblock`). A block's ``kv_heads`` must divide its ``keep`` (or the model's
    head count when ``keep`` is None); that part, and a list's length, are checked
    against the model in ``compress``.
    """

    kv_heads: int | tuple[int, ...] | None = None
    keep: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_heads", perblock.canonical("heads.kv_heads", self.kv_heads))
        object.__setattr__(self, "keep", perblock.canonical("heads.keep", self.keep))
        keep, kv = self.keep, self.kv_heads
        if isinstance(keep, tuple) and isinstance(kv, tuple) and len(keep) != len(kv):
            raise ConfigError(f"heads.kv_heads: {len(kv)} entries are not allowed with {len(keep)} in heads.keep; "
                              "give one per kept block in both")
        if keep is None or kv is None:
            return
        n = len(keep) if isinstance(keep, tuple) else len(kv) if isinstance(kv, tuple) else 1
        for i, (k, g) in enumerate(zip(perblock.expand(keep, n, 0), perblock.expand(kv, n, 0))):
            if k % g:
                at = f"[{i}]" if n > 1 else ""
                raise ConfigError(f"heads.kv_heads{at}: {g} is not allowed with heads.keep{at} {k}; "
                                  f"kv_heads must divide keep (one of {', '.join(map(str, divisors(k)))})")

    def per_block(self, n: int, heads: int) -> list[tuple[int, int]]:
        """(query heads, K/V heads) of each of ``n`` kept blocks of a model with ``heads`` heads."""
        perblock.check_length("heads.keep", self.keep, n)
        perblock.check_length("heads.kv_heads", self.kv_heads, n)
        keep = perblock.expand(self.keep, n, heads)
        pairs = [(k, k if g is None else g) for k, g in zip(keep, perblock.expand(self.kv_heads, n, None))]
        for i, (k, g) in enumerate(pairs):
            at = f"[{i}]" if self.is_per_block() else ""
            if k > heads:
                raise ConfigError(f"heads.keep{at}: {k} is not allowed; the model has {heads} heads "
                                  f"(expected 1..{heads})")
            if k % g:
                raise ConfigError(f"heads.kv_heads{at}: {g} is not allowed with {k} query heads; kv_heads must "
                                  f"divide it (one of {', '.join(map(str, divisors(k)))})")
        return pairs

    def is_per_block(self) -> bool:
        """True when a field is a per-block list (a schema version 2 config)."""
        return perblock.is_list(self.keep) or perblock.is_list(self.kv_heads)

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
        """e.g. ``heads 4 kv 2`` or ``heads 6,5,4,4 kv 2``."""
        parts = []
        if self.keep is not None:
            parts.append(f"heads {perblock.label(self.keep)}")
        if self.kv_heads is not None:
            parts.append(f"kv {perblock.label(self.kv_heads)}")
        return " ".join(parts) or None

    def columns(self) -> dict:
        """Flat scalar columns for tables: a per-block list's mean (numbers stay numbers in every row), and
        ``heads_blocks``, the per-block lists as in :meth:`summary` (None when uniform)."""
        return {"heads_keep": _column(self.keep), "heads_kv": _column(self.kv_heads),
                "heads_blocks": self.summary() if self.is_per_block() else None}


def _column(value: Any) -> Any:
    return round(sum(value) / len(value), 3) if perblock.is_list(value) else value


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


# ---- search sub-space --------------------------------------------------------------
class HeadsSpace(BaseModel):
    """Query heads kept and K/V head counts. None = [2/3 of the heads, all heads] and every divisor."""

    model_config = STRICT
    keep: list[Int] | None = Field(None, min_length=1)
    kv_heads: list[Int] | None = Field(None, min_length=1)

    @field_validator("keep", "kv_heads")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(x < 1 for x in v):
            raise ValueError(f"{v} has a value below 1; expected positive head counts")
        return None if v is None else sorted(set(v))


class HeadsChoices(KnobSpace):
    """Parameters ``heads.keep`` (of :attr:`head_keep`) and ``heads.kv`` (of :attr:`kv_choices`).

    ``heads.kv`` is an upper bound: the K/V head count used is the largest allowed
    choice dividing the kept heads (:meth:`kv_for`).
    """

    def __init__(self, spec: HeadsSpace, dims: VitDims, target: Any, earlier: dict) -> None:
        super().__init__(spec, dims, target, earlier)
        n = dims.num_heads
        self.head_keep = spec.keep or sorted({n - n // 3, n})
        self.kv_choices = spec.kv_heads or divisors(n)

    def check(self) -> None:
        """Kept heads within the model's; every kept count has a K/V choice dividing it."""
        if max(self.head_keep) > self.dims.num_heads:
            raise ConfigError(f"space.heads.keep: {max(self.head_keep)} is not allowed; the model has "
                              f"{self.dims.num_heads} heads")
        for k in self.head_keep:
            if not any(k % kv == 0 for kv in self.kv_choices):
                raise ConfigError(f"space.heads.kv_heads: none of {self.kv_choices} divides heads.keep {k}; "
                                  f"add one of {', '.join(map(str, divisors(k)))}")

    def distributions(self) -> dict[str, Any]:
        """Categorical over the kept-head and K/V choices."""
        return categorical({"heads.keep": self.head_keep, "heads.kv": self.kv_choices})

    def kv_for(self, heads: int, choice: int) -> int:
        """The largest allowed K/V count dividing ``heads`` and at most ``choice`` (else the smallest dividing)."""
        allowed = [kv for kv in self.kv_choices if heads % kv == 0]
        below = [kv for kv in allowed if kv <= choice]
        return max(below) if below else min(allowed)

    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """``keep`` and ``kv_heads``, each left out when it changes nothing."""
        heads = int(params.get("heads.keep", self.head_keep[0]))
        kv = self.kv_for(heads, int(params.get("heads.kv", self.kv_choices[0])))
        out = {}
        if heads != self.dims.num_heads:
            out["keep"] = heads
        if kv != heads:
            out["kv_heads"] = kv
        return out

    def encode(self, config: HeadsConfig) -> dict[str, Any]:
        """Kept heads and K/V heads."""
        heads = config.keep or self.dims.num_heads
        return {"heads.keep": heads, "heads.kv": config.kv_heads or heads}

    def count(self, earlier: dict[str, Any]) -> int:
        """Distinct (kept, K/V) pairs."""
        return len({(h, self.kv_for(h, c)) for h in self.head_keep for c in self.kv_choices})

    def presets(self) -> Presets:
        """Most heads with most K/V heads; alone the fewest K/V heads."""
        return Presets(least={"heads.keep": max(self.head_keep), "heads.kv": max(self.kv_choices)},
                       alone={"heads.kv": min(self.kv_choices)})


# ---- cost -------------------------------------------------------------------------
def shape_heads(blocks: list[BlockShape], cfg: HeadsConfig, dims: VitDims) -> list[BlockShape]:
    """``keep`` query heads and ``kv_heads`` K/V heads in every block (or each block its own)."""
    if cfg.is_identity():
        return blocks
    pairs = cfg.per_block(len(blocks), dims.num_heads)
    if cfg.is_per_block():
        return with_fields(blocks, [{"q_heads": q, "kv_heads": kv} for q, kv in pairs])

    def change(b: BlockShape) -> BlockShape:
        q = cfg.keep or b.q_heads
        return replace(b, q_heads=q, kv_heads=cfg.kv_heads or q)

    return each_block(blocks, change)


# ---- handler ---------------------------------------------------------------------
def apply_heads(model: nn.Module, cfg: HeadsConfig, ctx: Context) -> None:
    """Prune each block's query heads to its ``keep`` by importance, then mean-pool K/V into its ``kv_heads`` groups."""
    if cfg.is_identity():
        return
    from vitsearch.spaces.vit import adapter as vit, ops
    from vitsearch.spaces.vit.importance import head_scores

    heads = {b.attn.num_heads for b in model.blocks}
    if len(heads) != 1:
        raise ModelError(f"heads: blocks have different head counts {sorted(heads)}; the heads knob needs one count")
    (n_heads,) = heads
    pairs = cfg.per_block(len(model.blocks), n_heads)
    kept = None
    if any(keep < n_heads for keep, _ in pairs):
        scores, criterion = head_scores(model, ctx.batches, ctx.device)
        ctx.info["criterion"]["heads"] = criterion
        kept = [ops.top_indices(s, keep) for s, (keep, _) in zip(scores, pairs)]
    for i, (block, (keep, kv)) in enumerate(zip(model.blocks, pairs)):
        attn = vit.to_vitsearch_attention(block)
        if attn.num_kv_heads != attn.num_heads:
            raise ModelError("heads: this model's K/V heads are already grouped; compress the uncompressed model")
        if kept is not None and keep < n_heads:
            vit.prune_heads(attn, kept[i].to(attn.qkv.weight.device))
        if kv < keep:
            # Consecutive heads share K/V, as in GQA; grouping heads by weight similarity
            # was tried and did not help (heads' bases are not aligned).
            vit.group_kv(attn, kv)
    q, g = (list(x) for x in zip(*pairs))
    ctx.info["heads"] = {"num_heads": q if cfg.is_per_block() else q[0],
                         "num_kv_heads": g if cfg.is_per_block() else g[0], "base_heads": n_heads,
                         "kept": None if kept is None else [k.tolist() for k in kept]}


register("heads", HeadsConfig, space_spec=HeadsSpace, space=HeadsChoices, shape=shape_heads, prepare=apply_heads,
         examples=({"keep": 2, "kv_heads": 1}, {"kv_heads": 1}, {"keep": 2}), preset_rank=1)
