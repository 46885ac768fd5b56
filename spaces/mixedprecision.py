"""Mixed precision by sensitivity: which linear groups go to the low precision (ModelOpt AutoQuantize-style).

A :class:`Sensitivity` holds, per block, the damage of quantising that block's attention
or MLP linears alone (measured by :func:`vitsearch.evaluators.sensitivity.measure_sensitivity`
with the runtime's own fake quantisation). :func:`allocate_precision` is pure and
deterministic: it sends to the low precision the ``round(share * 2 * depth)`` groups of
least damage per unit gain (ties to the earlier block, then attn before mlp), and returns
the per-block lists of ``precision.attn`` and ``precision.mlp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.precision import PRECISIONS

PARTS = ("attn", "mlp")


@dataclass(frozen=True)
class Sensitivity:
    """Damage of quantising each block's attn / mlp linears alone (plain floats: pickles to Ray workers).

    ``attn[i]``, ``mlp[i]``: mean KL(float || quantised) per image, in nats, when only that
    part of block ``i`` is fake-quantised to ``precision`` in ``scheme``'s family;
    ``images``: how many calibration images the means are over; ``blocks``: the block
    importance the depth knob ranks by (as :class:`~.allocate.Saliency` keeps it), so that
    a ``depth.keep`` leaves the same blocks here as in ``compress`` (empty: not known).
    """

    attn: tuple[float, ...]
    mlp: tuple[float, ...]
    precision: str
    images: int
    scheme: str
    blocks: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.attn) != len(self.mlp):
            raise ConfigError(f"sensitivity: {len(self.attn)} attn values and {len(self.mlp)} mlp values; "
                              "expected one of each per block")
        for part in PARTS:
            bad = [v for v in getattr(self, part) if not (math.isfinite(v) and v >= 0.0)]
            if bad:
                raise ConfigError(f"sensitivity.{part}: {bad[0]!r} is not allowed; expected finite values >= 0")

    @property
    def depth(self) -> int:
        """Number of blocks measured."""
        return len(self.attn)

    def kept(self, keep: int | None) -> "Sensitivity":
        """The values of the blocks ``depth.keep`` leaves (None: all), in order."""
        from dataclasses import replace

        from vitsearch.spaces.knobs.depth import dropped_blocks

        if keep is None or keep == self.depth:
            return self
        if len(self.blocks) != self.depth:
            raise ConfigError("sensitivity: no block importance recorded; measure it with the model's blocks")
        gone = set(dropped_blocks(list(self.blocks), keep))
        idx = [i for i in range(self.depth) if i not in gone]
        return replace(self, attn=tuple(self.attn[i] for i in idx), mlp=tuple(self.mlp[i] for i in idx),
                       blocks=tuple(self.blocks[i] for i in idx))


def allocate_precision(sens: Sensitivity, share: float, costs: tuple[tuple[float, float], ...] | None = None,
                       low: str = "int8", high: str = "fp32") -> tuple[list[str], list[str]]:
    """(attn, mlp) precision per block: ``round(share * 2 * depth)`` groups at ``low``, the rest at ``high``.

    Groups go low in ascending damage per unit gain; ``costs[i]`` = (attn gain, mlp gain)
    of block ``i`` (MACs, latency: what quantising saves; None: equal gains). Ties go to
    the earlier block, then attn before mlp. ConfigError on a share outside [0, 1], costs
    that are not one positive pair per block, or unknown precisions.
    """
    depth = sens.depth
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ConfigError(f"precision allocation: share {share!r} is not allowed; expected a fraction of the "
                          f"{2 * depth} (block, part) groups in [0, 1]")
    for name, value in (("low", low), ("high", high)):
        if value not in PRECISIONS:
            raise ConfigError(f"precision allocation: {name} {value!r} is not allowed; expected one of "
                              f"{', '.join(PRECISIONS)}")
    gains = _gains(costs, depth)
    ranked = sorted((getattr(sens, part)[i] / gains[i][p], i, p) for i in range(depth) for p, part in enumerate(PARTS))
    chosen = {(i, p) for _, i, p in ranked[:round(share * 2 * depth)]}
    return ([low if (i, 0) in chosen else high for i in range(depth)],
            [low if (i, 1) in chosen else high for i in range(depth)])


def _gains(costs: tuple[tuple[float, float], ...] | None, depth: int) -> list[tuple[float, float]]:
    """``costs`` checked: one (attn, mlp) pair of positive finite gains per block; None: all 1."""
    if costs is None:
        return [(1.0, 1.0)] * depth
    pairs = [tuple(c) for c in costs]
    if len(pairs) != depth or any(len(c) != 2 for c in pairs):
        raise ConfigError(f"precision allocation: costs {costs!r} is not allowed; expected {depth} (attn, mlp) "
                          "pairs, one per block")
    bad = [v for c in pairs for v in c if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
    if bad:
        raise ConfigError(f"precision allocation: cost {bad[0]!r} is not allowed; expected positive finite gains")
    return [(float(a), float(m)) for a, m in pairs]
