"""Sparsity knob: 2:4 semi-structured, unstructured magnitude, structured MLP channels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from vitsearch.spaces.errors import ConfigError, ModelError
from vitsearch.spaces.vit.blocks import BlockShape, PerPart, each_block, with_fields
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import PARTS, Context, PartsConfig, register
from vitsearch.spaces.knobs.subspace import STRICT, PartsSpace, check_choices

if TYPE_CHECKING:
    from torch import nn

ALLOWED = "dense | 2:4 | unstructured:<p> | structured:<p> (mlp only), with 0 < p < 1"


def parse_sparsity(where: str, value: Any) -> tuple[str, float]:
    """``(kind, p)`` of a sparsity string; ConfigError naming field and value otherwise."""
    if value in ("dense", "2:4"):
        return value, 0.0 if value == "dense" else 0.5
    kind, sep, share = str(value).partition(":") if isinstance(value, str) else ("", "", "")
    if sep and kind in ("unstructured", "structured"):
        try:
            p = float(share)
        except ValueError:
            p = -1.0
        if 0.0 < p < 1.0:
            if kind == "structured" and not where.endswith("mlp"):
                raise ConfigError(f"{where}: {value!r} is not allowed; structured pruning removes MLP hidden "
                                  "channels and applies to sparsity.mlp only (attn: dense | 2:4 | unstructured:<p>)")
            return kind, p
    raise ConfigError(f"{where}: {value!r} is not allowed; expected {ALLOWED}")


@dataclass(frozen=True)
class SparsityConfig(PartsConfig):
    """Sparsity pattern of the attention (qkv, proj) and MLP (fc1, fc2) linears.

    ``mlp_keep``: MLP hidden channels kept in each kept block (a list, one entry per kept
    block; None = all), the per-block form of ``structured:<p>``; ``mlp`` may then still
    mask the narrowed linears (dense | 2:4 | unstructured:<p>).
    """

    KNOB = "sparsity"
    OTHER_FIELDS = ("mlp_keep",)
    DEFAULT = "dense"

    attn: str = "dense"
    mlp: str = "dense"
    mlp_keep: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for part in PARTS:
            kind, p = parse_sparsity(f"sparsity.{part}", getattr(self, part))
            # One canonical spelling so that equal configs compare and hash equal.
            canon = kind if kind in ("dense", "2:4") else f"{kind}:{p:g}"
            object.__setattr__(self, part, canon)
        object.__setattr__(self, "mlp_keep", perblock.canonical("sparsity.mlp_keep", self.mlp_keep, allow_int=False))
        if self.mlp_keep is not None and self.part("mlp")[0] == "structured":
            raise ConfigError(f"sparsity.mlp_keep: not allowed with sparsity.mlp {self.mlp!r}; both set the MLP "
                              "width: give structured:<p> (one share for all blocks) or mlp_keep (one width per block)")

    def part(self, name: str) -> tuple[str, float]:
        """Parsed ``(kind, p)`` for ``attn`` or ``mlp``."""
        return parse_sparsity(f"sparsity.{name}", getattr(self, name))

    def hidden(self, n: int, hidden: int) -> list[int]:
        """MLP hidden channels of each of ``n`` kept blocks of a model with ``hidden`` channels."""
        perblock.check_length("sparsity.mlp_keep", self.mlp_keep, n)
        if self.mlp_keep is not None:
            for i, w in enumerate(self.mlp_keep):
                if w > hidden:
                    raise ConfigError(f"sparsity.mlp_keep[{i}]: {w} is not allowed; the model's MLPs have {hidden} "
                                      f"hidden channels (expected 1..{hidden})")
            return list(self.mlp_keep)
        kind, p = self.part("mlp")
        return [structured_width(hidden, p) if kind == "structured" else hidden] * n

    def is_per_block(self) -> bool:
        """True when the MLP widths are given per block (a schema version 2 config)."""
        return self.mlp_keep is not None

    def is_identity(self) -> bool:
        """True when every part keeps the default and no width is given."""
        return super().is_identity() and self.mlp_keep is None

    def summary(self) -> str | None:
        """e.g. ``mlp 2:4`` or ``attn 2:4 mlp_keep 288,240,96``."""
        parts = [super().summary(), self.mlp_keep and f"mlp_keep {perblock.label(self.mlp_keep)}"]
        return " ".join(p for p in parts if p) or None

    def columns(self) -> dict:
        """Flat scalar columns for tables (the widths as ``288,240,96``)."""
        return {**super().columns(),
                "sparsity_mlp_keep": None if self.mlp_keep is None else perblock.label(self.mlp_keep)}


def structured_width(hidden: int, p: float) -> int:
    """MLP hidden channels kept by ``structured:<p>`` of ``hidden`` (the one rounding rule)."""
    return max(1, round(hidden * (1 - p)))


# ---- search sub-space --------------------------------------------------------------
class SparsitySpace(BaseModel):
    """Sparsity choices per part (dense | 2:4 | unstructured:<p> | structured:<p> for mlp)."""

    model_config = STRICT
    attn: list[str] = Field(default_factory=lambda: ["dense", "2:4"], min_length=1)
    mlp: list[str] = Field(default_factory=lambda: ["dense", "2:4", "structured:0.25", "structured:0.5"], min_length=1)

    @field_validator("attn", "mlp")
    @classmethod
    def _parse(cls, v: list[str], info) -> list[str]:
        try:
            return check_choices(f"sparsity.{info.field_name}", v, parse_sparsity)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class SparsityChoices(PartsSpace):
    """Parameters ``sparsity.attn`` and ``sparsity.mlp``; dense in the least compressing preset."""

    KNOB = "sparsity"
    LEAST = ("dense",)


# ---- cost -------------------------------------------------------------------------
def shape_sparsity(blocks: list[BlockShape], cfg: SparsityConfig, dims: VitDims) -> list[BlockShape]:
    """The sparsity per part; structured MLP sparsity or ``mlp_keep`` narrows the MLP (masks change no shape)."""
    if cfg.is_identity():
        return blocks
    parts = PerPart(cfg.attn, cfg.mlp)
    if cfg.is_per_block():
        widths = cfg.hidden(len(blocks), dims.mlp_hidden)
        return with_fields(blocks, [{"sparsity": parts, "mlp_hidden": w} for w in widths])
    kind, p = cfg.part("mlp")
    return each_block(blocks, lambda b: replace(
        b, sparsity=parts, mlp_hidden=structured_width(b.mlp_hidden, p) if kind == "structured" else b.mlp_hidden))


# ---- handler ---------------------------------------------------------------------
MASK = "weight_mask"  # buffer name on masked linears; reapply_masks() looks for it
HALF = ("fp16", "bf16")


def sparse_kernel_for(value: str, device: str, precision: str | None = None) -> bool:
    """Whether sparsity ``value`` can run on sparse kernels on ``device`` (in ``precision``; None: any the
    precision knob offers): 2:4 on CUDA in a half precision only. Everything else runs as masked dense
    weights, as fast as dense (structured pruning aside, which shrinks the linears themselves)."""
    kind = parse_sparsity("sparsity", value)[0]
    return kind == "2:4" and str(device).startswith("cuda") and (precision is None or precision in HALF)


def apply_sparsity(model: nn.Module, cfg: SparsityConfig, ctx: Context) -> None:
    """Structured pruning (``structured:<p>`` or ``mlp_keep``) shrinks fc1/fc2; masks (2:4, unstructured)
    become buffers on the linears (after the shrinking, so they fit the narrowed weights)."""
    if cfg.mlp_keep is not None or cfg.part("mlp")[0] == "structured":
        _structured(model, cfg, ctx)
    for part in PARTS:
        kind, p = cfg.part(part)
        if kind not in ("dense", "structured"):
            _mask_part(model, part, kind, p)
            ctx.info.setdefault("sparsity", {}).setdefault(part, {}).update(kind=kind, share=p)


def _mask_part(model: nn.Module, part: str, kind: str, p: float) -> None:
    import torch

    from vitsearch.spaces.vit import adapter as vit, ops

    for i, block in enumerate(model.blocks):
        for name, lin in vit.part_linears(block, part).items():
            if kind == "2:4" and lin.in_features % 4:
                raise ModelError(f"sparsity.{part}: 2:4 needs input widths divisible by 4, but "
                                 f"blocks.{i}.{part}.{name} has {lin.in_features}; use unstructured:0.5")
            mask = ops.two_four_mask(lin.weight) if kind == "2:4" else ops.magnitude_mask(lin.weight, p)
            if hasattr(lin, MASK):  # an already-masked layer keeps its earlier zeros too
                mask &= getattr(lin, MASK)
            lin.register_buffer(MASK, mask)
            with torch.no_grad():
                lin.weight.mul_(mask)


def _structured(model: nn.Module, cfg: SparsityConfig, ctx: Context) -> None:
    from vitsearch.spaces.vit import adapter as vit, ops
    from vitsearch.spaces.vit.importance import channel_scores

    hidden = {b.mlp.fc1.out_features for b in model.blocks}
    if len(hidden) != 1:
        raise ModelError(f"sparsity.mlp: blocks have different MLP widths {sorted(hidden)}; structured pruning "
                         "needs one width (compress the uncompressed model)")
    (full,) = hidden
    widths = cfg.hidden(len(model.blocks), full)
    scores, criterion = channel_scores(model, ctx.batches, ctx.device)
    for block, s, w in zip(model.blocks, scores, widths):
        if w < full:
            keep = ops.top_indices(s, w)
            vit.shrink_mlp(block.mlp, keep.to(block.mlp.fc1.weight.device))
    ctx.info["criterion"]["mlp"] = criterion
    record = {"kind": "structured", "hidden_kept": widths}
    if cfg.mlp_keep is None:
        record["share"] = cfg.part("mlp")[1]
    ctx.info.setdefault("sparsity", {})["mlp"] = record


def finalize_sparsity(model: nn.Module, cfg: SparsityConfig, ctx: Context) -> None:
    """On CUDA with fp16/bf16, 2:4-masked weights become semi-structured sparse tensors.

    Elsewhere (CPU, fp32, int8) and for shapes the sparse kernels refuse, weights stay
    masked dense: correct, without speedup; ``vitsearch_info`` says how many layers
    run on sparse kernels so that the latency numbers can be read against it.
    """
    import torch
    from torch import nn

    from vitsearch.spaces.vit import adapter as vit

    for part in PARTS:
        if cfg.part(part)[0] != "2:4":
            continue
        record = ctx.info.setdefault("sparsity", {}).setdefault(part, {})
        # each block's linears with that block's precision (a per-block list may quantise some of them)
        formats = ctx.config.precision.per_block(len(model.blocks))
        linears = [(lin, getattr(fmt, part)) for block, fmt in zip(model.blocks, formats)
                   for lin in vit.part_linears(block, part).values()]
        converted, refused = 0, None
        if sparse_kernel_for("2:4", ctx.device):
            for lin, fmt in linears:
                if not sparse_kernel_for("2:4", ctx.device, fmt):  # fp32 or quantised: the kernels take halves only
                    continue
                if MASK not in lin._buffers:  # not prepared with 2:4 masks: packing would corrupt it
                    refused = "weights carry no 2:4 mask (finalize a model from prepare())"
                    continue
                try:
                    sparse = torch.sparse.to_sparse_semi_structured(lin.weight.detach().contiguous())
                except (RuntimeError, ValueError, NotImplementedError) as exc:
                    refused = f"{tuple(lin.weight.shape)}: {str(exc).splitlines()[0][:160]}"
                    continue
                lin.weight = nn.Parameter(sparse, requires_grad=False)
                converted += 1
        record.update(sparse_kernels=converted == len(linears) if converted else False,
                      sparse_layers=f"{converted}/{len(linears)}", refused=refused)


register("sparsity", SparsityConfig, space_spec=SparsitySpace, space=SparsityChoices, shape=shape_sparsity,
         prepare=apply_sparsity, finalize=finalize_sparsity,
         examples=({"attn": "2:4", "mlp": "2:4"}, {"attn": "unstructured:0.3", "mlp": "unstructured:0.6"},
                   {"mlp": "structured:0.5"}))
