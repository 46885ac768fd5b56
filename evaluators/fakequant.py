"""Fake quantisation: linears that compute what their runtime's quantisation will give, and train through it.

Quantisation-aware distillation runs the student's quantised linears through the
quantise-dequantise of the scheme they will be deployed in, so the distillation sees the
quantisation error. Pure tensor maths first (one function per scheme and tensor), then
the patch that swaps a model's linears for :class:`FakeQuantLinear` for the length of a
``with`` block (:func:`fake_quantised`): the model's parameters and state-dict keys never
change, so what distillation saves is the plain float model a runtime quantises.

Schemes (:class:`FakeQuantScheme`, asked of a runtime by ``Runtime.fake_quant_scheme``;
a precision per part, or per kept block where the config gives one per block):

* ``torchao`` (eager, compile): ``int8`` = activations per token and weights per output
  channel, symmetric int8 in [-128, 127] with scale max|t| / 127.5
  (``Int8DynamicActivationInt8WeightConfig``); ``int8-weight`` = the weights alone
  (``Int8WeightOnlyConfig``); ``int4-weight`` = tinygemm's asymmetric 4-bit groups along
  the inputs, in bf16 (``Int4WeightOnlyConfig``, group as ``int4_config`` picks it).
* ``ort`` (onnxruntime): ``int8`` = weights per tensor, symmetric int8 with scale
  max|w| / 127, activations as ``DynamicQuantizeLinear`` (asymmetric uint8, one range per
  call: per :attr:`FakeQuantScheme.images` images, the batch the program is built for);
  ``int8-weight`` / ``int4-weight`` = ``MatMulNBits`` symmetric blocks of 32 inputs.

Gradients are straight-through: the rounding passes them unchanged (ranges come from the
tensor's own min/max, so nothing is clipped). Deterministic: no randomness anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.precision import int4_config
from vitsearch.spaces.vit import adapter as vit

FAMILIES = ("torchao", "ort")
KINDS = ("int8", "int8-weight", "int4-weight")
ORT_BLOCK = 32  # MatMulNBits' block along the inputs (evaluators/runtimes/onnxexport.py: BLOCK)


@dataclass(frozen=True)
class FakeQuantScheme:
    """How a runtime quantises a candidate's linears.

    ``targets``: (block, part, kind) per quantised part; ``block`` indexes the model's
    (kept) blocks, None for every block. ``images``: for ``ort``, how many images share
    one dynamic activation range (the batch its program is built for; None: a whole call).
    """

    family: str
    targets: tuple[tuple[int | None, str, str], ...]
    images: int | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"fake quantisation: family {self.family!r} is not known; expected one of "
                              f"{', '.join(FAMILIES)}")
        for _, part, kind in self.targets:
            if kind not in KINDS:
                raise ConfigError(f"fake quantisation: precision.{part} {kind!r} is not quantised; expected one of "
                                  f"{', '.join(KINDS)}")
        if self.images is not None and self.images < 1:
            raise ConfigError(f"fake quantisation: images {self.images!r} must be a positive image count")

    def describe(self) -> str:
        """One line: the family and each target's kind, e.g. ``ort: attn int8, mlp int8``."""
        return f"{self.family}: " + ", ".join(f"{'' if b is None else f'blocks[{b}].'}{p} {k}"
                                               for b, p, k in self.targets)

    def kinds(self, block: int) -> list[tuple[str, str]]:
        """(part, kind) of every target in block ``block``."""
        return [(p, k) for b, p, k in self.targets if b is None or b == block]


def scheme_for(family: str, config: Any, images: int | None = None) -> FakeQuantScheme | None:
    """The ``family`` scheme of ``config``'s quantised parts (one precision per part, or one per kept block).

    None when it quantises none.
    """
    targets = []
    for part in ("attn", "mlp"):
        value = getattr(config.precision, part)
        per_block = [(None, value)] if isinstance(value, str) else list(enumerate(value))
        targets += [(b, part, v) for b, v in per_block if v in KINDS]
    return FakeQuantScheme(family, tuple(targets), images) if targets else None


# ---- the maths: quantise-dequantise, straight-through ---------------------------------
class _StraightThrough(torch.autograd.Function):
    """``q`` exactly (no float round trip) going forward; ``x``'s gradient unchanged going back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad, None


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q``'s values with ``x``'s gradient (the straight-through estimator); ``q`` must not need a gradient."""
    return _StraightThrough.apply(x, q.detach())


def torchao_int8(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers, scale): symmetric int8 per row of the last dimension, as torchao's ``Int8Tensor.from_hp`` (PerRow).

    The integers carry ``t / scale``'s gradient (straight-through); the scale is a constant.
    """
    scale = (t.detach().abs().amax(-1, keepdim=True) / 127.5).clamp(min=torch.finfo(torch.float32).eps)
    unit = t * (1.0 / scale)
    return straight_through(unit, unit.detach().round().clamp(-128, 127)), scale


def torchao_int4(w: torch.Tensor, group: int) -> torch.Tensor:
    """tinygemm's asymmetric 4-bit groups of ``group`` inputs (bf16 qparams), dequantised in bf16."""
    out, width = w.shape
    g = w.detach().to(torch.bfloat16).reshape(out, width // group, group)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15.0).clamp(min=torch.finfo(torch.bfloat16).smallest_normal)
    zero = lo + scale * 8
    q = ((g - (zero - scale * 8)) / scale).round().clamp(0, 15)
    return ((q - 8).to(torch.bfloat16) * scale + zero).reshape(out, width)


def ort_int8_weight(w: torch.Tensor) -> torch.Tensor:
    """Per-tensor symmetric int8 ([-127, 127], scale max|w| / 127) as ``quantize_dynamic`` stores weights."""
    w = w.detach()
    scale = float(w.abs().amax()) / 127.0
    return w if scale == 0 else (w / scale).round().clamp(-127, 127) * scale


def ort_dynamic_uint8(x: torch.Tensor, images: int | None) -> torch.Tensor:
    """``DynamicQuantizeLinear`` of ``x``: uint8, range widened to hold 0, one range per ``images`` images."""
    x = x.detach()
    n = x.shape[0]
    size = n if images is None else min(images, n)
    if n % size:
        return torch.cat([ort_dynamic_uint8(c, None) for c in x.split(size)])
    groups = x.reshape(n // size, -1)
    lo = groups.amin(1, keepdim=True).double().clamp(max=0.0)
    hi = groups.amax(1, keepdim=True).double().clamp(min=0.0)
    scale64 = (hi - lo) / 255.0  # in double, as the reference computes it (python floats)
    safe = torch.where(scale64 == 0, torch.ones_like(scale64), scale64)
    zero, scale = (-lo / safe).round().clamp(0, 255).float(), safe.float()
    q = ((groups / scale).round() + zero).clamp(0, 255).sub(zero) * scale
    return torch.where(scale64 == 0, groups, q).reshape(x.shape)


def ort_blockwise(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric ``bits``-bit blocks of :data:`ORT_BLOCK` inputs, the largest magnitude at -2^(bits-1), dequantised."""
    out, width = w.shape
    blocks = F.pad(w.detach(), (0, -width % ORT_BLOCK)).view(out, -1, ORT_BLOCK)
    hi, lo = blocks.amax(-1, keepdim=True), blocks.amin(-1, keepdim=True)
    scale = torch.where(hi.abs() > lo.abs(), hi, lo) / -(2 ** (bits - 1))
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = (blocks / safe).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (q * scale).view(out, -1)[:, :width]


# ---- the patch ---------------------------------------------------------------------------
class FakeQuantLinear(nn.Module):
    """``linear`` (kept, trained in place) computed through ``kind`` of ``scheme``'s family."""

    def __init__(self, linear: nn.Linear, kind: str, scheme: FakeQuantScheme) -> None:
        super().__init__()
        self.linear, self.kind, self.family, self.images = linear, kind, scheme.family, scheme.images
        self.group = int4_config(linear.in_features, "cuda").group_size if kind == "int4-weight" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The linear of the fake-quantised input and weight (straight-through gradients)."""
        w, b = self.linear.weight, self.linear.bias
        st = straight_through
        if self.family == "ort":
            if self.kind == "int8":
                return F.linear(st(x, ort_dynamic_uint8(x, self.images)), st(w, ort_int8_weight(w)), b)
            return F.linear(x, st(w, ort_blockwise(w, 8 if self.kind == "int8-weight" else 4)), b)
        if self.kind == "int8":  # torchao's order: integer product, times the token scale, the channel scale, + bias
            (qx, sx), (qw, sw) = torchao_int8(x), torchao_int8(w)
            y = F.linear(qx, qw) * sx * sw.flatten()
            return y if b is None else y + b
        if self.kind == "int8-weight":
            qw, sw = torchao_int8(w)
            y = F.linear(x, qw) * sw.flatten()
            return y if b is None else y + b
        half = lambda t: None if t is None else st(t, t.to(torch.bfloat16).float())  # noqa: E731
        y = F.linear(half(x), st(w, torchao_int4(w, self.group).float()), half(b))
        return half(y)


@contextlib.contextmanager
def fake_quantised(model: nn.Module, scheme: FakeQuantScheme | None) -> Iterator[nn.Module]:
    """``model`` with the linears of ``scheme``'s parts fake-quantised inside the block, restored after.

    ``None`` changes nothing. The linears themselves are kept (and trained): on exit the
    model has exactly its own modules, parameters and state-dict keys again.
    """
    swapped: list[tuple[nn.Module, str, nn.Linear]] = []
    try:
        if scheme is not None:
            for i, block in enumerate(model.blocks):
                for part, kind in scheme.kinds(i):
                    owner = block.attn if part == "attn" else block.mlp
                    for name, linear in vit.part_linears(block, part).items():
                        setattr(owner, name, FakeQuantLinear(linear, kind, scheme))
                        swapped.append((owner, name, linear))
        yield model
    finally:
        for owner, name, linear in reversed(swapped):
            setattr(owner, name, linear)
