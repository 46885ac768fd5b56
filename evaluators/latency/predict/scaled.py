"""Component tables for shapes the profile did not measure: per-block head counts and MLP widths.

A per-block config (heads and widths allocated by saliency) asks for attention and MLP
parts of sizes no profile key holds. Such a part's latency is read from the profiled
parts of the same format (precision and sparsity; an MLP narrowed by structured pruning
runs the same dense kernels at its width) by their MACs at the same token count:
linearly between the two nearest profiled sizes around it, else scaled in proportion
from the nearest one, which is then said to be out of the profiled range.
"""

from __future__ import annotations

import re
from typing import Any

from vitsearch.evaluators.latency.predict.keys import is_dense_kernel

_ATTN = re.compile(r"^h(\d+)-kv(\d+)-(.+)-([^-]+)$")
_MLP = re.compile(r"^f(\d+)-(.+)-([^-]+)$")


def parse(part: str, key: str) -> tuple[tuple[int, ...], str] | None:
    """(sizes, format) of a table key: ``((q, kv), "fp32-dense")`` or ``((hidden,), "fp32-dense")``."""
    m = (_ATTN if part == "attn" else _MLP).match(key)
    if m is None:
        return None
    *sizes, precision, sparsity = m.groups()
    if part == "mlp" and is_dense_kernel(sparsity):
        sparsity = "dense"
    return tuple(int(s) for s in sizes), f"{precision}-{sparsity}"


def part_macs(part: str, sizes: tuple[int, ...], n: int, dims: Any) -> float:
    """MACs of one attention (q, kv heads) or MLP (hidden width) part on ``n`` tokens."""
    d, e = dims.head_dim, dims.embed_dim
    if part == "attn":
        q, kv = sizes
        return n * e * d * (2 * q + 2 * kv) + 2 * q * n * n * d
    return 2 * n * e * sizes[0]


class Scaled:
    """A table standing in for an unprofiled key: its ms at ``n`` tokens from profiled tables of one format."""

    __slots__ = ("part", "sizes", "refs", "dims", "tokens")

    def __init__(self, part: str, sizes: tuple[int, ...], refs: list[tuple[tuple[int, ...], Any]], dims: Any) -> None:
        self.part, self.sizes, self.refs, self.dims = part, sizes, refs, dims
        self.tokens = refs[0][1].tokens

    def at(self, n: int) -> tuple[float, bool]:
        """(ms, inside the profiled token range)."""
        target = part_macs(self.part, self.sizes, n, self.dims)
        points = sorted((part_macs(self.part, s, n, self.dims), *t.at(n)) for s, t in self.refs)
        below = [p for p in points if p[0] <= target]
        above = [p for p in points if p[0] >= target]
        if below and above:
            (m0, v0, ok0), (m1, v1, ok1) = below[-1], above[0]
            w = 0.0 if m1 == m0 else (target - m0) / (m1 - m0)
            return v0 + w * (v1 - v0), ok0 and ok1
        m, v, ok = below[-1] if below else above[0]
        return v * target / m, ok

    def inside(self) -> bool:
        """Whether the key lies between profiled sizes (at the full token count)."""
        n = self.tokens[-1]
        target = part_macs(self.part, self.sizes, n, self.dims)
        macs = [part_macs(self.part, s, n, self.dims) for s, _ in self.refs]
        return min(macs) <= target <= max(macs)


def scaled_table(part: str, key: str, tables: dict[str, Any], dims: Any) -> Scaled | None:
    """A :class:`Scaled` table for ``key`` from ``tables`` (one part's), or None when no profiled key shares its format."""
    parsed = parse(part, key)
    if parsed is None or dims is None:
        return None
    sizes, fmt = parsed
    refs = []
    for k, table in tables.items():
        p = parse(part, k)
        if p is not None and p[1] == fmt:
            refs.append((p[0], table))
    return Scaled(part, sizes, refs, dims) if refs else None
