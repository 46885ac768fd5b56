"""Deployed model size: what every stored tensor really takes, and a sparse-format view.

``size_mb`` (MB = 10^6 bytes) counts every parameter and persistent buffer by what it
stores:

- plain tensors (fp32/fp16/bf16/int...): elements x dtype size;
- tensor subclasses (torchao quantized weights: int8 = 1 byte per weight plus scales
  and zero points, int4 = half a byte plus scales): the sum of their inner tensors, read
  through ``__tensor_flatten__`` so the count follows whatever the installed torchao
  stores;
- ``torch.sparse`` semi-structured (2:4, CUDA) tensors: packed values + metadata only
  (the transposed copies some constructors keep for training are not deployed);
- masked-dense weights (2:4 or unstructured masks on CPU): dense storage. Buffers whose
  name ends in ``mask`` (``weight_mask``, ``mlp_mask``, ...) are pruning masks, not
  deployed weights, and are left out.

``size_mb_sparse_storage`` is the same total with every plain floating weight matrix
that is at least 40 % zeros (after applying its ``<name>_mask`` if one is registered)
counted in the smaller of its dense size and a sparse format: 2:4 pattern -> half the
values + 2 bits of metadata per kept value; anything else -> CSR (values + int32 column
indices + int32 row pointers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

MB = 1_000_000
#: A weight with at least this share of zeros is considered for sparse storage.
SPARSE_MIN_ZEROS = 0.4
_INDEX_BYTES = 4  # int32 column indices and row pointers


@dataclass(frozen=True)
class SizeReport:
    """Deployed size of a model (MB = 10^6 bytes) and its parameter count."""

    size_mb: float
    size_mb_sparse_storage: float
    n_params: int
    bytes_by_storage: dict[str, int] = field(default_factory=dict)
    n_sparse_storage_tensors: int = 0
    n_mask_buffers_excluded: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    def summary(self) -> str:
        """One human line saying how the size was obtained."""
        return (
            f"{self.size_mb:.3f} MB as stored ({self.n_params:,} parameters, counted from the bytes of every "
            f"parameter and persistent buffer); {self.size_mb_sparse_storage:.3f} MB with "
            f"{self.n_sparse_storage_tensors} weight(s) >= {SPARSE_MIN_ZEROS:.0%} zeros in a sparse format"
        )


def model_size(model: nn.Module) -> SizeReport:
    """Size of ``model`` as deployed, plus its size with sparse storage for sparse weights."""
    total = sparse_total = n_params = n_sparse = n_masks = 0
    by_storage: dict[str, int] = {}
    for kind, tensor, mask in _deployed_tensors(model):
        if kind == "mask":
            n_masks += 1
            continue
        stored = tensor_storage_bytes(tensor)
        total += stored
        label = storage_label(tensor)
        by_storage[label] = by_storage.get(label, 0) + stored
        sparse = sparse_storage_bytes(tensor, mask) if kind == "param" else stored
        n_sparse += sparse < stored
        sparse_total += min(sparse, stored)
        if kind == "param":
            n_params += tensor.numel()
    return SizeReport(total / MB, sparse_total / MB, n_params, by_storage, n_sparse, n_masks)


def _deployed_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(kind, tensor, mask) for each distinct parameter and persistent buffer."""
    seen: set[int] = set()
    for module in model.modules():
        for name, tensor in module._parameters.items():
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                yield "param", tensor, _mask_for(module, name)
        for name, tensor in module._buffers.items():
            if tensor is None or name in module._non_persistent_buffers_set or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            yield ("mask" if name.lower().endswith("mask") else "buffer"), tensor, None


def _mask_for(module: nn.Module, name: str) -> torch.Tensor | None:
    """The registered mask buffer of parameter ``name`` (``weight_mask`` for ``weight``/``weight_orig``)."""
    base = name[: -len("_orig")] if name.endswith("_orig") else name
    mask = module._buffers.get(f"{base}_mask")
    return mask if isinstance(mask, torch.Tensor) else None


def tensor_storage_bytes(t: torch.Tensor) -> int:
    """Bytes ``t`` really stores (inner tensors of subclasses, packed sparse formats)."""
    semi = getattr(torch.sparse, "SparseSemiStructuredTensor", None)
    if semi is not None and isinstance(t, semi):
        # Deployed: packed values + metadata; packed_t/meta_t/bitmask serve training only.
        return sum(tensor_storage_bytes(x) for x in (t.packed, t.meta) if x is not None)
    if _is_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_storage_bytes(x) for x in (getattr(t, n) for n in names) if x is not None)
    if t.layout == torch.sparse_coo:
        return tensor_storage_bytes(t._values()) + tensor_storage_bytes(t._indices())
    if t.layout == torch.sparse_csr:
        return sum(tensor_storage_bytes(x) for x in (t.values(), t.crow_indices(), t.col_indices()))
    return t.numel() * t.element_size()


def storage_label(t: torch.Tensor) -> str:
    """Short name of how ``t`` is stored: its dtype, or its subclass name."""
    if _is_subclass(t):
        return type(t).__name__
    if t.layout != torch.strided:
        return f"{str(t.layout).removeprefix('torch.')}/{str(t.dtype).removeprefix('torch.')}"
    return str(t.dtype).removeprefix("torch.")


def _is_subclass(t: torch.Tensor) -> bool:
    return type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__")


def sparse_storage_bytes(t: torch.Tensor, mask: torch.Tensor | None = None) -> int:
    """Bytes of ``t`` in the best of dense, 2:4 and CSR storage (see the module docstring).

    Tensors that are not plain floating matrices keep their stored size.
    """
    stored = tensor_storage_bytes(t)
    if _is_subclass(t) or t.layout != torch.strided or not t.is_floating_point() or t.dim() < 2:
        return stored
    with torch.no_grad():
        w = t.detach()
        if mask is not None and mask.shape == w.shape:
            w = w * (mask != 0)
        nonzero = w != 0
        nnz = int(nonzero.sum())
        if 1.0 - nnz / w.numel() < SPARSE_MIN_ZEROS:
            return stored
        elem = w.element_size()
        if is_two_four(nonzero):
            kept = w.numel() // 2
            return min(stored, kept * elem + (kept * 2 + 7) // 8)
        rows = w.shape[0]
        return min(stored, nnz * (elem + _INDEX_BYTES) + (rows + 1) * _INDEX_BYTES)


def is_two_four(nonzero: torch.Tensor) -> bool:
    """Whether at most 2 of every 4 consecutive elements along the last dim are nonzero."""
    if nonzero.shape[-1] % 4:
        return False
    return bool((nonzero.reshape(-1, 4).sum(-1) <= 2).all())
