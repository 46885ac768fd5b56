"""Precision knob: dtype casts (fp16/bf16) and torchao quantization (int8, int4), per part or per kept block."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.vit.blocks import BlockShape, PerPart, each_block, with_fields
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import PARTS, Context, PartsConfig, register
from vitsearch.spaces.knobs.subspace import STRICT, PartsSpace, Presets, Target, pick

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-weight", "int4-weight")
#: what a model can be deployed in as a whole (``model.precision``, :attr:`PrecisionConfig.base`)
BASE_PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class PrecisionConfig(PartsConfig):
    """Numeric format of the attention (qkv, proj) and MLP (fc1, fc2) linears, and of the rest.

    ``base``: what the model runs in outside the parts that say otherwise - patch
    embedding, norms, head and the activations between blocks - i.e. the precision the
    uncompressed model is deployed in (the study's ``model.precision``). A GPU study's
    candidates run in bf16 with some parts quantised; their reference is the model in
    bf16 (:func:`reference_precision`), not in fp32.

    ``attn`` and ``mlp`` are each one precision for every kept block or a list with one
    per kept block (:mod:`.perblock`; e.g. chosen by sensitivity); a list's length is
    checked against the model in ``compress`` (and against ``depth.keep`` in the config).
    """

    KNOB = "precision"
    DEFAULT = "fp32"
    OTHER_FIELDS = ("base",)

    attn: str | tuple[str, ...] = "fp32"
    mlp: str | tuple[str, ...] = "fp32"
    base: str = "fp32"

    def __post_init__(self) -> None:
        for part in PARTS:
            object.__setattr__(self, part, perblock.canonical_name(f"precision.{part}", getattr(self, part),
                                                                   PRECISIONS))
        if self.base not in BASE_PRECISIONS:
            raise ConfigError(f"precision.base: {self.base!r} is not allowed; expected one of "
                              f"{', '.join(BASE_PRECISIONS)}")

    def is_identity(self) -> bool:
        """Everything in fp32: nothing changes."""
        return super().is_identity() and self.base == self.DEFAULT

    def is_per_block(self) -> bool:
        """True when a part is a per-block list (a schema version 2 config)."""
        return any(perblock.is_list(getattr(self, p)) for p in PARTS)

    def per_block(self, n: int) -> list[PerPart]:
        """(attn, mlp) precision of each of ``n`` kept blocks; ConfigError when a list has another length."""
        for part in PARTS:
            perblock.check_length(f"precision.{part}", getattr(self, part), n, single="one precision")
        return [PerPart(*pair) for pair in zip(*(perblock.expand(getattr(self, p), n, self.DEFAULT) for p in PARTS))]

    def named_values(self, base: bool = True) -> list[tuple[str, str]]:
        """(field, value) of every entry, e.g. ``("precision.attn", "int8")``, ``("precision.mlp[3]", "fp32")``;
        then the base (unless ``base`` is False)."""
        out = []
        for part in PARTS:
            value = getattr(self, part)
            out += ([(f"precision.{part}[{i}]", v) for i, v in enumerate(value)] if perblock.is_list(value)
                    else [(f"precision.{part}", value)])
        return out + ([("precision.base", self.base)] if base else [])

    def summary(self) -> str | None:
        """e.g. ``mlp int8``; under a half base ``bf16 mlp int8`` (the parts that differ from the base);
        a per-block part as ``mlp int8,bf16,int8``."""
        parts = [f"{p} {perblock.label(getattr(self, p))}" for p in PARTS if getattr(self, p) != self.base]
        return " ".join(([self.base] if self.base != self.DEFAULT else []) + parts) or None

    def columns(self) -> dict:
        """Flat string columns for tables (the parts, a per-block one as ``int8,fp32,int8``; then the base)."""
        return {**{f"precision_{p}": perblock.label(getattr(self, p)) for p in PARTS}, "precision_base": self.base}


def reference_precision(base: str) -> PrecisionConfig:
    """The uncompressed model deployed in ``base``: every part and the rest in it."""
    return PrecisionConfig(attn=base, mlp=base, base=base)


# ---- search sub-space --------------------------------------------------------------
class PrecisionSpace(BaseModel):
    """Precision choices per part."""

    model_config = STRICT
    attn: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    mlp: list[str] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)

    @field_validator("attn", "mlp")
    @classmethod
    def _known(cls, v: list[str], info) -> list[str]:
        bad = [x for x in v if x not in PRECISIONS]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a precision; expected some of {', '.join(PRECISIONS)}")
        return list(dict.fromkeys(v))

    def defaulted(self) -> list[str]:
        """The parts the study leaves at their default (the base precision and int8), in field order."""
        return [p for p in type(self).model_fields if p not in self.model_fields_set]


def with_base(spec: PrecisionSpace, base: str) -> PrecisionSpace:
    """``spec`` with ``base`` in place of fp32 in the parts it leaves at their default (the defaults name fp32 for
    the base precision); the parts it gives, as given. Which parts were given stays recorded."""
    if base == "fp32":
        return spec
    updates = {p: list(dict.fromkeys(base if v == "fp32" else v for v in getattr(spec, p))) for p in spec.defaulted()}
    return type(spec).model_construct(_fields_set=set(spec.model_fields_set), **{**dict(spec), **updates})


class PrecisionChoices(PartsSpace):
    """Parameters ``precision.attn`` and ``precision.mlp``: the base in the least compressing preset, int8 alone.

    Relative to the target's base precision (``model.precision``): a part the study
    leaves at its default chooses between the base and int8 (fp32 and int8 on an fp32
    base; bf16 and int8 on a bf16 one), and every decoded config carries the base.
    Checked against what the target realises: ``target.precisions``, or what eager
    PyTorch runs on the target's device.
    """

    KNOB = "precision"
    LEAST = ("fp32",)
    ALONE = ("int8", "int8-weight", "fp32")

    def __init__(self, spec: PrecisionSpace, dims: VitDims, target: Target, earlier: dict) -> None:
        self.base = target.base_precision
        super().__init__(with_base(spec, self.base), dims, target, earlier)
        self.allowed = target.precisions or supported_precisions(target.device)

    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """The chosen value per part, and the base when it is not fp32."""
        out = super().decode(params, earlier)
        return out if self.base == "fp32" else {**out, "base": self.base}

    def presets(self):
        """The base in every part (least); int8 (else int8-weight, else the base) alone."""
        least = {k: pick(v, (self.base,)) for k, v in self.choices().items()}
        alone = {k: pick(v, ("int8", "int8-weight", self.base)) for k, v in self.choices().items()}
        return Presets(least, alone)

    def check(self) -> None:
        """The base and every choice must run on the target."""
        if self.base not in self.allowed:
            raise ConfigError(f"model.precision: {self.base!r} cannot run on device {self.target.device!r} in this "
                              f"runtime; it runs {', '.join(p for p in self.allowed if p in BASE_PRECISIONS)}")
        for part in PARTS:
            bad = [p for p in getattr(self.spec, part) if p not in self.allowed]
            if bad:
                raise ConfigError(f"space.precision.{part}: {bad[0]!r} cannot run on device {self.target.device!r}; "
                                  f"it supports {', '.join(self.allowed)}")


# ---- cost -------------------------------------------------------------------------
def shape_precision(blocks: list[BlockShape], cfg: PrecisionConfig, dims: VitDims) -> list[BlockShape]:
    """The numeric format per part in every block (or each kept block its own)."""
    if cfg.is_identity():
        return blocks
    if cfg.is_per_block():
        return with_fields(blocks, [{"precision": parts} for parts in cfg.per_block(len(blocks))])
    parts = PerPart(cfg.attn, cfg.mlp)
    return each_block(blocks, lambda b: replace(b, precision=parts))


# ---- handler ---------------------------------------------------------------------
#: What each device kind really runs (probed with torch 2.14 / torchao 0.18): on CPU
#: torchao 0.18's int4 weight-only packings need the mslk kernel package (plain), CUDA
#: (tile_packed_to_4d) or have no CPU kernel (plain_int32).
SUPPORTED = {
    "cpu": ("fp32", "fp16", "bf16", "int8", "int8-weight"),
    "cuda": PRECISIONS,  # int4-weight is probed when applied; a failure is a DeviceError
}
#: torchao's int4 packing per device kind: tile_packed_to_4d runs on the core aten int4
#: kernels (tinygemm, sm80+, bf16), where torchao's default ("plain") needs mslk
INT4_PACKING = {"cuda": "tile_packed_to_4d"}
HALF = {"fp16": "float16", "bf16": "bfloat16"}


def supported_precisions(device: str) -> tuple[str, ...]:
    """Precisions ``device`` ('cpu', 'cuda', 'cuda:1', ...) can run."""
    return SUPPORTED.get(str(device).split(":")[0], ("fp32",))


def check_precision_device(cfg: PrecisionConfig, device: str) -> None:
    """DeviceError naming the device and what it supports when an entry (``precision.mlp[3]``) asks for more."""
    ok = supported_precisions(device)
    for where, value in cfg.named_values():
        if value not in ok:
            why = (" (torchao has no int4 weight-only kernel for CPU without the mslk package)"
                   if value == "int4-weight" else "")
            raise DeviceError(f"{where}: {value!r} cannot run on device {device!r}{why}; "
                              f"{device} supports {', '.join(ok)}")


def check_precision_blocks(model: nn.Module, cfg: PrecisionConfig, ctx: Context) -> None:
    """At prepare: a per-block list has one entry per kept block, else a ConfigError before any slow work."""
    cfg.per_block(len(model.blocks))


def _cast_in(dtype: torch.dtype, _module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(dtype) if _is_float(a) else a for a in args)


def _cast_out(_module: nn.Module, _args: tuple, out: Any) -> Any:
    import torch

    return _cast_back(torch.float32, _module, _args, out)


def _cast_back(dtype: torch.dtype, _module: nn.Module, _args: tuple, out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(o.to(dtype) if _is_float(o) else o for o in out)
    return out.to(dtype) if _is_float(out) else out


def _is_float(t: Any) -> bool:
    import torch

    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _cast(module: nn.Module, dtype: torch.dtype, around: torch.dtype | None = None) -> None:
    # Hooks (module-level functions, picklable) keep the surrounding dtype (``around``,
    # default fp32) in and out of the cast part, so callers still pass fp32 images and
    # read fp32 logits, and a part of another dtype inside a half model hands back halves.
    import torch

    module.to(dtype)
    module.register_forward_pre_hook(partial(_cast_in, dtype))
    if around is None or around == torch.float32:
        module.register_forward_hook(_cast_out)
    else:
        module.register_forward_hook(partial(_cast_back, around))


def _dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, HALF[name]) if name in HALF else torch.float32


def apply_precision(model: nn.Module, cfg: PrecisionConfig, ctx: Context) -> None:
    """The base dtype over the whole model, each block part's other float dtype, then torchao ``quantize_``.

    Per block and part, the entry of that block: a float entry unlike the base casts that
    block's part; a quantised one puts that block's part linears (and no others) through
    ``quantize_``, grouped by kind.
    """
    check_precision_device(cfg, ctx.device)
    if cfg.is_identity():
        return
    blocks = cfg.per_block(len(model.blocks))
    base = cfg.base
    values = {v for parts in blocks for v in parts}
    if base == "fp32" and len(values) == 1 and values <= set(HALF):  # one half dtype everywhere: the whole model
        (base,) = values
    if base != "fp32":
        _cast(model, _dtype(base))
    for block, parts in zip(model.blocks, blocks):
        for part, value in zip(PARTS, parts):
            if value != base and value in BASE_PRECISIONS:  # a float part unlike the rest of the model
                _cast(block.attn if part == "attn" else block.mlp, _dtype(value), _dtype(base))
    for kind in ("int8", "int8-weight", "int4-weight"):
        targets = [(i, part) for i, parts in enumerate(blocks) for part, v in zip(PARTS, parts) if v == kind]
        if targets:
            _quantize(model, kind, targets, cfg, ctx, _dtype(base))
    ctx.info["precision"] = {"attn": perblock.to_json(cfg.attn), "mlp": perblock.to_json(cfg.mlp), "base": cfg.base,
                             "device": ctx.device}


def _quantize(model: nn.Module, kind: str, where: list[tuple[int, str]], cfg: PrecisionConfig, ctx: Context,
              around: torch.dtype) -> None:
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    from vitsearch.spaces.vit import adapter as vit

    targets = {}
    for i, part in where:
        field = f"precision.{part}[{i}]" if perblock.is_list(getattr(cfg, part)) else f"precision.{part}"
        for name, lin in vit.part_linears(model.blocks[i], part).items():
            targets[id(lin)] = (f"blocks.{i}.{part}.{name}", lin, field)
    if kind == "int8":
        make = lambda lin: Int8DynamicActivationInt8WeightConfig()  # noqa: E731
    elif kind == "int8-weight":
        make = lambda lin: Int8WeightOnlyConfig()  # noqa: E731
    else:
        make = lambda lin: int4_config(lin.in_features, ctx.device)  # noqa: E731
    for fqn, lin, field in targets.values():
        if kind == "int4-weight":
            lin.to(torch.bfloat16)  # torchao's int4 path takes bf16 weights
        try:
            quantize_(lin, make(lin))
        except (ImportError, RuntimeError, NotImplementedError, ValueError) as exc:
            raise DeviceError(f"{field}: {kind} failed on {ctx.device} for {fqn} "
                              f"{tuple(lin.weight.shape)} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                              f"choose another precision") from None
        if type(lin.weight) in (torch.Tensor, torch.nn.Parameter):  # torchao skips shapes it cannot take
            raise DeviceError(f"{field}: torchao left {fqn} {tuple(lin.weight.shape)} unquantized "
                              f"for {kind} on {ctx.device}; choose another precision")
        # torchao binds a functools.partial as extra_repr, which breaks pickling (Ray).
        lin.__dict__.pop("extra_repr", None)
        if kind == "int4-weight" and around != torch.bfloat16:
            lin.register_forward_pre_hook(partial(_cast_in, torch.bfloat16))
            lin.register_forward_hook(partial(_cast_back, around))


def int4_config(in_features: int, device: str) -> Any:
    """torchao's int4 weight-only config for a linear of ``in_features`` inputs on ``device``.

    The largest group size of 128, 64, 32 dividing ``in_features`` (none: torchao leaves the
    layer unquantized, which :func:`_quantize` reports), packed as :data:`INT4_PACKING` says.
    """
    from torchao.quantization import Int4WeightOnlyConfig

    group = next((g for g in (128, 64, 32) if in_features % g == 0), 128)
    packing = INT4_PACKING.get(str(device).split(":")[0])
    return (Int4WeightOnlyConfig(group_size=group) if packing is None
            else Int4WeightOnlyConfig(group_size=group, int4_packing_format=packing))


register("precision", PrecisionConfig, space_spec=PrecisionSpace, space=PrecisionChoices, shape=shape_precision,
         prepare=check_precision_blocks, finalize=apply_precision, preset_rank=0,
         examples=({"attn": "int8", "mlp": "int8"}, {"attn": "int8-weight", "mlp": "int8-weight"},
                   {"attn": "bf16", "mlp": "bf16"}, {"attn": "fp16", "mlp": "int8"}))
