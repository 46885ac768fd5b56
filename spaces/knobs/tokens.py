"""Token budget knob: merge (ToMe) or prune (EViT) tokens at chosen blocks.

Semantics (the MACs and latency code depend on them, see :func:`tokens_per_block`):
schedule keys are block indices in the compressed model (after depth dropping). At
block ``i`` with share ``s`` the block's attention runs on the incoming tokens; the
patch (non-prefix) token count ``n`` then becomes ``max(1, round(s * n))`` before the
block's MLP, and later blocks see the reduced count. Prefix tokens (class + register)
are never touched. One ToMe step can merge at most half of the patch tokens, hence
``merge`` shares must be >= 0.5; for ``prune`` the reduced count includes the one
token into which the pruned tokens are fused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from vitsearch.spaces.errors import ConfigError, ModelError
from vitsearch.spaces.vit.blocks import BlockShape, with_fields
from vitsearch.spaces.vit.counts import MIN_MERGE_SHARE, reduced_count  # noqa: F401  (re-exported)
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.spaces.knobs.base import Context, check_keys, register
from vitsearch.spaces.knobs.subspace import STRICT, Int, KnobSpace, Presets, categorical

if TYPE_CHECKING:
    from torch import nn

METHODS = ("merge", "prune")


@dataclass(frozen=True)
class TokensConfig:
    """Per-block share of patch tokens kept; empty schedule = unchanged.

    ``schedule`` is stored as a sorted tuple of ``(block, share)`` pairs so the config
    stays hashable; a ``{block: share}`` dict is accepted and normalised.
    """

    method: str = "merge"
    schedule: Any = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"tokens.method: {self.method!r} is not allowed; expected one of {', '.join(METHODS)}")
        items = self.schedule.items() if isinstance(self.schedule, dict) else self.schedule
        try:
            pairs = [(k, v) for k, v in items]
        except (TypeError, ValueError):
            raise ConfigError(f"tokens.schedule: {self.schedule!r} is not allowed; expected an object "
                              'mapping block index to share kept, e.g. {"2": 0.7}') from None
        norm = {}
        for key, share in pairs:
            block = _block_index(key)
            norm[block] = _share(block, share, self.method)
        object.__setattr__(self, "schedule", tuple(sorted(norm.items())))

    def is_identity(self) -> bool:
        """True when no block reduces its tokens."""
        return all(share == 1.0 for _, share in self.schedule)

    def to_dict(self) -> dict:
        """JSON form; schedule keys as strings (JSON object keys)."""
        out: dict = {}
        if self.method != "merge":
            out["method"] = self.method
        if self.schedule:
            out["schedule"] = {str(k): v for k, v in self.schedule}
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "TokensConfig":
        """Inverse of :meth:`to_dict`."""
        check_keys("tokens", data, ("method", "schedule"))
        schedule = data.get("schedule", {})
        if not isinstance(schedule, dict):
            raise ConfigError(f"tokens.schedule: {schedule!r} is not allowed; expected an object "
                              'mapping block index to share kept, e.g. {"2": 0.7}')
        return cls(method=data.get("method", "merge"), schedule=schedule)

    def summary(self) -> str | None:
        """e.g. ``tokens merge@2:0.7,4:0.7``; None when identity."""
        if self.is_identity():
            return None
        return f"tokens {self.method}@" + ",".join(f"{k}:{v:g}" for k, v in self.schedule)

    def columns(self) -> dict:
        """Flat scalar columns for tables."""
        reduced = [(k, v) for k, v in self.schedule if v < 1.0]
        return {
            "tokens_method": self.method if reduced else "none",
            "tokens_first_block": reduced[0][0] if reduced else None,
            "tokens_blocks": ",".join(str(k) for k, _ in reduced),
            "tokens_share_product": math.prod(v for _, v in reduced) if reduced else 1.0,
        }


def _block_index(key: Any) -> int:
    # JSON object keys are strings; Python callers may pass ints.
    text = str(key).strip() if isinstance(key, (int, str)) and not isinstance(key, bool) else ""
    if not text.isdigit():
        raise ConfigError(f"tokens.schedule: block key {key!r} is not allowed; expected a block index >= 0 "
                          "(in the compressed model, after depth dropping)")
    return int(text)


def _share(block: int, share: Any, method: str) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 < float(share) <= 1.0:
        raise ConfigError(f"tokens.schedule[{block}]: share {share!r} is not allowed; expected a number in (0, 1]")
    share = float(share)
    if method == "merge" and share < MIN_MERGE_SHARE:
        raise ConfigError(
            f"tokens.schedule[{block}]: share {share:g} is not allowed with method 'merge'; one bipartite "
            f"merge step removes at most half of the tokens, so shares must be >= {MIN_MERGE_SHARE} "
            "(spread the reduction over more blocks, or use method 'prune')")
    return share


def tokens_per_block(config: Any, num_patch_tokens: int, num_prefix_tokens: int, depth: int) -> list[tuple[int, int]]:
    """(tokens entering attention, tokens entering MLP) per kept block, prefix included.

    ``config`` is a CompressionConfig (its depth knob decides how many blocks are kept)
    or a TokensConfig; ``depth`` is the base model's block count.
    """
    tokens = getattr(config, "tokens", config)
    depth_cfg = getattr(config, "depth", None)
    kept = depth if depth_cfg is None or depth_cfg.keep is None else depth_cfg.keep
    if kept > depth:
        raise ConfigError(f"depth.keep: {kept} is not allowed for a model with {depth} blocks; expected 1..{depth}")
    check_schedule_fits(tokens, kept)
    return _counts(dict(tokens.schedule), num_patch_tokens, num_prefix_tokens, kept)


def _counts(shares: dict[int, float], num_patch: int, num_prefix: int, kept: int) -> list[tuple[int, int]]:
    n, out = num_patch, []
    for i in range(kept):
        n_attn = n
        if i in shares:
            n = reduced_count(n, shares[i])
        out.append((n_attn + num_prefix, n + num_prefix))
    return out


def check_schedule_fits(tokens: TokensConfig, kept_blocks: int) -> None:
    """Schedule keys must name kept blocks."""
    bad = [k for k, _ in tokens.schedule if k >= kept_blocks]
    if bad:
        raise ConfigError(f"tokens.schedule: block {bad[0]} is not allowed; the compressed model keeps "
                          f"{kept_blocks} blocks, so keys must be 0..{kept_blocks - 1}")


# ---- search sub-space --------------------------------------------------------------
class TokensSpace(BaseModel):
    """Token methods, the blocks where a reduction may happen and the shares to choose from."""

    model_config = STRICT
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


class TokensChoices(KnobSpace):
    """Parameters ``tokens.method`` and ``tokens.share@<block>`` for each of :attr:`token_blocks`.

    Reads the depth knob: a block is only scheduled when depth dropping keeps it.
    """

    reads = ("depth",)

    def __init__(self, spec: TokensSpace, dims: VitDims, target: Any, earlier: dict) -> None:
        super().__init__(spec, dims, target, earlier)
        blocks = spec.blocks if spec.blocks is not None else [dims.depth // 4, dims.depth // 2]
        self.token_blocks = sorted(set(blocks))
        self.shares = sorted(set(spec.shares), reverse=True)
        self.keep_max = earlier["depth"].keep_range[1]

    def check(self) -> None:
        """Every block must exist in the deepest model the depth range keeps."""
        if self.token_blocks and max(self.token_blocks) >= self.keep_max:
            raise ConfigError(f"space.tokens.blocks: {max(self.token_blocks)} is not allowed; blocks must be "
                              f"below depth keep_max {self.keep_max}")

    def distributions(self) -> dict[str, Any]:
        """Categorical over the methods and, per block, the shares."""
        return categorical({"tokens.method": list(self.spec.methods),
                            **{f"tokens.share@{b}": self.shares for b in self.token_blocks}})

    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """The schedule of the kept blocks' shares below 1, and the method; {} when nothing is reduced."""
        keep = earlier["depth"].keep or self.dims.depth
        shares = {b: float(params.get(f"tokens.share@{b}", self.shares[0])) for b in self.token_blocks if b < keep}
        schedule = {str(b): v for b, v in shares.items() if v < 1.0}
        if not schedule:
            return {}
        return {"method": params.get("tokens.method", self.spec.methods[0]), "schedule": schedule}

    def encode(self, config: TokensConfig) -> dict[str, Any]:
        """The method and every block's share (1 where the schedule has none)."""
        shares = dict(config.schedule)
        return {"tokens.method": config.method, **{f"tokens.share@{b}": shares.get(b, 1.0) for b in self.token_blocks}}

    def count(self, earlier: dict[str, Any]) -> int:
        """Distinct schedules over the kept blocks: a share of 1 everywhere is one config whatever the method."""
        keep = earlier["depth"].keep or self.dims.depth
        n_blocks = sum(1 for b in self.token_blocks if b < keep)
        n_methods, n_shares = len(self.spec.methods), len(self.shares)
        if 1.0 in self.shares:
            return n_methods * (n_shares ** n_blocks - 1) + 1
        return n_methods * n_shares ** n_blocks if n_blocks else 1

    def presets(self) -> Presets:
        """The first method, the largest share everywhere; alone the share closest to 0.7 everywhere."""
        return Presets(least={"tokens.method": self.spec.methods[0],
                              **{f"tokens.share@{b}": max(self.shares) for b in self.token_blocks}},
                       alone={f"tokens.share@{b}": min(self.shares, key=lambda s: abs(s - 0.7))
                              for b in self.token_blocks})


# ---- cost -------------------------------------------------------------------------
def shape_tokens(blocks: list[BlockShape], cfg: TokensConfig, dims: VitDims) -> list[BlockShape]:
    """Tokens entering each block's attention and MLP (:func:`tokens_per_block`), its method and scheduled share."""
    check_schedule_fits(cfg, len(blocks))
    shares = dict(cfg.schedule)
    counts = _counts(shares, dims.num_patches, dims.num_prefix_tokens, len(blocks))
    return with_fields(blocks, [{"n_attn": n_a, "n_mlp": n_m, "token_method": cfg.method, "token_share": shares.get(i)}
                                for i, (n_a, n_m) in enumerate(counts)])


# ---- handler ---------------------------------------------------------------------
def apply_tokens(model: nn.Module, cfg: TokensConfig, ctx: Context) -> None:
    """Turn every block into a token-reducing block and let ``model.blocks`` carry token sizes."""
    if not cfg.schedule:
        return
    from vitsearch.spaces.vit import adapter as vit

    kept = len(model.blocks)
    check_schedule_fits(cfg, kept)
    prefix = vit.num_prefix_tokens(model)
    if cfg.method == "prune" and (prefix < 1 or getattr(model, "cls_token", None) is None):
        raise ModelError("tokens.method: 'prune' ranks tokens by class-token attention and this model has no "
                         "class token; use method 'merge'")
    shares = dict(cfg.schedule)
    for i, block in enumerate(model.blocks):
        vit.to_token_block(block, shares.get(i), cfg.method, prefix)
    model.blocks = vit.TokenBlocks(*model.blocks)
    ctx.info["tokens"] = {
        "method": cfg.method,
        "tokens_per_block": [list(t) for t in tokens_per_block(cfg, vit.num_patch_tokens(model), prefix, kept)],
    }


register("tokens", TokensConfig, space_spec=TokensSpace, space=TokensChoices, shape=shape_tokens, prepare=apply_tokens,
         preset_rank=2, examples=({"method": "merge", "schedule": {"1": 0.7, "2": 0.5}},
                   {"method": "prune", "schedule": {"1": 0.5, "3": 0.3}}))
