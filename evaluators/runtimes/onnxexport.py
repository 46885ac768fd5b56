"""A candidate as an ONNX graph, and ONNX Runtime's own quantisation of its linears.

Export: ``torch.onnx.export(..., dynamo=True, opset_version=18)`` of the finalized
*float* model (2:4 / unstructured masks baked into dense weights; fp16/bf16 casts kept
only where the target provider runs halves). The TorchScript exporter fails on token
merging (``Tensor.__round__``) and on grouped K/V (SDPA with ``enable_gqa``); the dynamo
exporter takes both. Static shapes: the graph is built for the example's batch.

Quantisation: ORT's, not torchao's (an ORT session cannot run torchao tensor
subclasses). Each linear of a part is located in the graph by the module scope the
exporter records on every node (``pkg.torch.onnx.name_scopes``, e.g.
``blocks.3.mlp.fc1``), so precision is applied per block and part exactly as the config
says (a per-block part quantises only the blocks whose entry asks for it):

* ``int8``: ``quantize_dynamic`` (DynamicQuantizeLinear + MatMulInteger, int8 weights);
  it refuses the dynamo graph in shape inference ("Inferred shape and existing shape
  differ") unless the graph's stored ``value_info`` is cleared first, which is done.
* ``int8-weight`` / ``int4-weight``: ``MatMulNBitsQuantizer`` (weight-only, blocks of 32,
  symmetric).

Every targeted linear must come out quantised, or the build fails with the count.

:func:`quantised_like_ort` computes the same schemes in torch from the eager weights: the
reference a quantised program is checked against (:mod:`.numerics`), so the check compares
like with like instead of holding an int8 program to the float model's logits.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitsearch.evaluators.runtimes.base import float_structure
from vitsearch.spaces.errors import DeviceError
from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import PARTS
from vitsearch.spaces.vit import adapter as vit

OPSET = 18
QUANT_OPS = {"int8": "MatMulInteger", "int8-weight": "MatMulNBits", "int4-weight": "MatMulNBits"}
NBITS = {"int8-weight": 8, "int4-weight": 4}
BLOCK = 32


class ExportRefused(DeviceError):
    """The exporter or ORT's quantiser cannot build this candidate: the same config fails the same way again."""

    config_determined = True


@contextlib.contextmanager
def quiet():
    """Silence the exporter's and quantiser's progress chatter (INFO logs, root warnings)."""
    names = ("onnx_ir", "onnxscript", "torch.onnx", "root", "")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


@dataclass(frozen=True)
class LinearNodes:
    """The MatMul/Gemm node names of each kept block's part linears in an exported graph.

    ``nodes[part]``: every block's, in block order; :meth:`of` the given (block, part)s'.
    """

    by_block: dict[tuple[int, str], list[str]]

    def __getitem__(self, part: str) -> list[str]:
        return [n for (_, p), names in sorted(self.by_block.items()) if p == part for n in names]

    def of(self, where: list[tuple[int, str]]) -> list[str]:
        """The node names of the linears of each (block, part) in ``where``."""
        return [n for key in where for n in self.by_block.get(key, [])]


def export_onnx(prepared: nn.Module, config: Any, example: torch.Tensor, keep_half: bool = False):
    """(ModelProto, :class:`LinearNodes`) of the float candidate, built for ``example``'s shape."""
    import warnings

    from vitsearch.evaluators.runtimes.eager import finalized

    model = finalized(prepared, float_structure(config, keep_half), "cpu")
    x = example.detach().to("cpu", torch.float32)
    try:
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=OPSET, verbose=False)
    except Exception as exc:  # the exporter's failures vary by op: name the candidate and stop
        raise ExportRefused(f"latency.runtime: ONNX export failed for {config.summary()} "
                          f"({type(exc).__name__}: {_first_line(exc)}); use runtime eager or compile for it") from None
    proto = program.model_proto
    del proto.graph.value_info[:]  # stale shapes there make ORT's quantiser refuse the graph
    return proto, part_nodes(proto, model)


def part_nodes(proto: Any, model: nn.Module) -> LinearNodes:
    """MatMul/Gemm node names of each (block, part)'s linears, found by their recorded module scope."""
    owner: dict[str, tuple[int, str]] = {}
    for i, block in enumerate(model.blocks):
        for part in PARTS:
            for name in vit.part_linears(block, part):
                owner[f"blocks.{i}.{part}.{name}"] = (i, part)
    found: dict[tuple[int, str], list[str]] = {key: [] for key in owner.values()}
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        try:
            scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        except (ValueError, SyntaxError):
            scopes = []
        parts = {owner[s] for s in scopes if s in owner}
        if len(parts) == 1:
            found[parts.pop()].append(node.name)
    nodes = LinearNodes(found)
    for part in PARTS:
        want = sum(1 for _, p in owner.values() if p == part)
        if len(nodes[part]) != want:
            raise ExportRefused(f"precision.{part}: found {len(nodes[part])} of the {want} {part} linears in the "
                                "exported ONNX graph (module scopes missing); cannot quantise them in ONNX Runtime")
    return nodes


def quantize(proto: Any, nodes: LinearNodes, config: Any) -> tuple[Any, dict[str, str]]:
    """ORT-quantise each block part's linears as ``config.precision`` says; (ModelProto, what was done per part)."""
    import onnx

    blocks = config.precision.per_block(len({i for i, _ in nodes.by_block}))
    how: dict[tuple[str, str], str] = {}  # (kind, part) -> what was done to that part's linears of that kind
    for kind in ("int8", "int8-weight", "int4-weight"):
        where = [(i, p) for i, parts in enumerate(blocks) for p, v in zip(PARTS, parts) if v == kind]
        if not where:
            continue
        targets = nodes.of(where)
        before = _count(proto, QUANT_OPS[kind])
        with tempfile.TemporaryDirectory() as tmp:
            proto = (dynamic_int8(proto, targets, Path(tmp)) if kind == "int8"
                     else weight_only_nbits(proto, targets, NBITS[kind]))
        made = _count(proto, QUANT_OPS[kind]) - before
        if made != len(targets):
            raise ExportRefused(f"precision.{where[0][1]}: ONNX Runtime quantised {made} of {len(targets)} linears "
                                f"to {kind}; choose another precision for runtime onnxruntime")
        for part in dict.fromkeys(p for _, p in where):
            n = len(nodes.of([w for w in where if w[1] == part]))
            how[(kind, part)] = (f"ORT quantize_dynamic int8 (DynamicQuantizeLinear + MatMulInteger), {n} linears"
                                 if kind == "int8" else
                                 f"ORT MatMulNBits {NBITS[kind]}-bit weights (block {BLOCK}), {n} linears")
    onnx.checker.check_model(proto)
    texts = {f"precision.{p}": perblock.describe(getattr(config.precision, p), lambda v, p=p: how.get((v, p)))
             for p in PARTS}
    return proto, {k: v for k, v in texts.items() if v is not None}


def dynamic_int8(proto: Any, targets: list[str], tmp: Path) -> Any:
    """``quantize_dynamic`` (int8 weights, dynamic int8 activations) of the ``targets`` nodes only."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp / "float.onnx", tmp / "int8.onnx"
    onnx.save(proto, src)
    with quiet():
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=targets,
                         weight_type=QuantType.QInt8, per_channel=False)
    out = onnx.load(dst)
    del out.graph.value_info[:]
    return out


def weight_only_nbits(proto: Any, targets: list[str], bits: int) -> Any:
    """``MatMulNBits`` weight-only quantisation (``bits`` 4 or 8) of the ``targets`` MatMul nodes only."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # nodes_to_include widens the op-type selection instead of narrowing it: exclude the rest
    others = [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in set(targets)]
    quantizer = MatMulNBitsQuantizer(proto, bits=bits, block_size=BLOCK, is_symmetric=True,
                                     nodes_to_exclude=others, op_types_to_quantize=("MatMul",))
    with quiet():
        quantizer.process()
    out = quantizer.model.model
    del out.graph.value_info[:]
    return out


def quantised_like_ort(model: nn.Module, config: Any) -> tuple[nn.Module, tuple[str, ...]]:
    """A copy of the float ``model`` whose quantised parts compute ORT's scheme, as :func:`quantize` builds it.

    ``int8``: weights per-tensor symmetric int8 (scale max|w| / 127), activations
    quantised per call to asymmetric uint8 as ``DynamicQuantizeLinear`` does (so run it on
    the batches the program runs); ``int8-weight`` / ``int4-weight``: weights in symmetric
    blocks of :data:`BLOCK` along the input, the block's largest magnitude mapped to
    -2^(bits-1). Weights come from ``model``, never from the program. A per-block part is
    quantised in the blocks whose entry asks for it. Returns the copy and the parts so
    quantised in some block (other parts and blocks are left as they are).
    """
    import copy

    blocks = config.precision.per_block(len(model.blocks))
    parts = tuple(p for p in PARTS if any(getattr(b, p) in QUANT_OPS for b in blocks))
    if not parts:
        return model, ()
    model = copy.deepcopy(model).float().eval()
    for block, kinds in zip(model.blocks, blocks):
        for part, kind in zip(PARTS, kinds):
            if kind not in QUANT_OPS:
                continue
            owner = block.attn if part == "attn" else block.mlp
            for name, linear in vit.part_linears(block, part).items():
                setattr(owner, name, OrtQuantLinear(linear, kind))
    return model, parts


class OrtQuantLinear(nn.Module):
    """A linear computing ORT's quantisation ``kind`` of it (see :func:`quantised_like_ort`)."""

    def __init__(self, linear: nn.Linear, kind: str) -> None:
        super().__init__()
        self.kind = kind
        w = linear.weight.detach().float()
        self.weight = nn.Parameter(_int8_tensor(w) if kind == "int8" else _blockwise(w, NBITS[kind]),
                                   requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T + bias`` with ``x`` quantised first for ``int8``."""
        return torch.nn.functional.linear(_dynamic_uint8(x) if self.kind == "int8" else x, self.weight, self.bias)


def _int8_tensor(w: torch.Tensor) -> torch.Tensor:
    """``w`` through per-tensor symmetric int8 ([-127, 127], zero point 0), dequantised."""
    scale = float(w.abs().max()) / 127.0
    return w if scale == 0 else (w / scale).round().clamp(-127, 127) * scale


def _dynamic_uint8(x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``DynamicQuantizeLinear`` (range widened to hold 0, uint8, one scale per call), dequantised."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0
    if scale == 0:
        return x
    zero = min(max(round(-lo / scale), 0), 255)
    return ((x / scale).round() + zero).clamp(0, 255).sub(zero) * scale


def _blockwise(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` (out, in) through symmetric ``bits``-bit blocks of :data:`BLOCK` inputs per output, dequantised."""
    out, width = w.shape
    pad = -width % BLOCK
    blocks = torch.nn.functional.pad(w, (0, pad)).view(out, -1, BLOCK)
    hi, lo = blocks.amax(-1, keepdim=True), blocks.amin(-1, keepdim=True)
    scale = torch.where(hi.abs() > lo.abs(), hi, lo) / -(2 ** (bits - 1))
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = (blocks / safe).round().clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (q * scale).view(out, -1)[:, :width]


def _count(proto: Any, op: str) -> int:
    return sum(1 for n in proto.graph.node if n.op_type == op)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
