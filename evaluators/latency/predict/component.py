"""The component predictor: per-component latency tables summed, then a calibrated correction.

Why this shape. A compressed ViT's latency is mostly the sum of its parts (stem,
attention and MLP per block, token-reduction steps), each measured on the target device
over the shapes the space can produce (:mod:`.profile`). But at batch 1 on a CPU the sum
of parts timed alone is far from the whole: per-op dispatch overhead, residual adds and
norms that no part contains, weights that sit in cache when one block is timed in a loop
and do not when twelve blocks take turns, and int8 dynamic quantization whose cost per
call does not scale like its matmuls. So the predictor fits, on whole-model measurements
of sampled configs, a *calibrated additive model*:

    latency = sum_g  a_g * (sum of component ms in group g)  +  sum_k  b_k * count_k  +  c

with one factor ``a_g`` per component group (stem, attention and MLP per precision,
reduction steps) - the cache / fusion correction, multiplicative and per format - and
one per-op overhead ``b_k`` per structural count (blocks, token-reducing blocks, blocks
attending under a token-size mask, GQA blocks). It is fitted on relative error (every
config counts alike, fast or slow) by ridge regression shrunk towards the plain sum
(a = 1, b = c = 0): with few whole-model samples it degrades to the sum of parts rather
than to nonsense, with many the data win. A tree ensemble was the alternative; a linear
model in these physically meaningful terms extrapolates sanely, needs 10x fewer
samples, and predicts in microseconds with nothing but a dot product. A bootstrap
ensemble of the same fit gives the uncertainty (plus the residual noise of the fit).

A second stage (:mod:`.residual`, from 40 whole-model samples on) multiplies by
``exp(trees(config))``: boosted trees on the log-ratio measured / first stage, for the
interactions a sum cannot express.

Prediction, calibration, checks and persistence are the interface's (:mod:`.base`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from typing import Any

from vitsearch.spaces.blocks import block_shapes

from vitsearch.evaluators.latency.predict.base import LatencyPredictor
from vitsearch.evaluators.latency.predict.keys import block_keys, is_count
from vitsearch.evaluators.latency.predict.scaled import scaled_table


class Table:
    """One component key: measured ms at token-count anchors, linearly interpolated."""

    __slots__ = ("tokens", "ms")

    def __init__(self, tokens: list[int], ms: list[float]) -> None:
        self.tokens, self.ms = list(tokens), list(ms)

    def at(self, n: int) -> tuple[float, bool]:
        """(ms at ``n`` tokens, inside the measured range)."""
        t, m = self.tokens, self.ms
        if len(t) == 1 or n <= t[0]:
            return m[0] * (n / t[0] if n < t[0] and t[0] else 1.0), n >= t[0]
        if n >= t[-1]:
            if n == t[-1] or len(t) < 2:
                return m[-1], n == t[-1]
            slope = (m[-1] - m[-2]) / (t[-1] - t[-2])
            return m[-1] + slope * (n - t[-1]), False
        i = bisect_left(t, n)
        if t[i] == n:
            return m[i], True
        w = (n - t[i - 1]) / (t[i] - t[i - 1])
        return m[i - 1] + w * (m[i] - m[i - 1]), True


class ComponentPredictor(LatencyPredictor):
    """The component kind: ``state["tables"]`` of measured parts, a factor per group and a cost per count."""

    kind = None

    def __init__(self, state: dict) -> None:
        super().__init__(state)
        tables = state.get("tables") or {}
        self.tables = {part: {k: Table(**v) for k, v in tables.get(part, {}).items()}
                       for part in ("attn", "mlp", "reduce")}
        self.stem_ms = float(tables.get("stem", 0.0))

    @property
    def floor_ms(self) -> float:
        """A twentieth of the stem: no model runs faster than its patch embedding and head."""
        return 0.05 * self.stem_ms if self.stem_ms > 0 else super().floor_ms

    def features(self, config: Any) -> tuple[list[float], list[str]]:
        """The correction model's feature row for ``config``, and why it is out of range.

        Summed block by block over the config's :func:`~vitsearch.spaces.blocks.block_shapes`.
        """
        why: list[str] = []
        blocks = block_shapes(config, self.dims)
        keys = [block_keys(b) for b in blocks]
        # each distinct key's table once, attention first: a key not profiled is reported once
        at = {k: self._table("attn", k, why) for k in dict.fromkeys(a for a, _ in keys)}
        mt = {k: self._table("mlp", k, why) for k in dict.fromkeys(m for _, m in keys)}
        # a schedule reducing anywhere turns every block into a token block (ToMe / EViT patch)
        reducing = any(b.token_share is not None and b.token_share < 1.0 for b in blocks)
        f: dict[str, float] = defaultdict(float, {"stem": self.stem_ms, "n_blocks": len(blocks), "const": 1.0,
                                                  "n_token_blocks": len(blocks) if reducing else 0})
        masked = False
        for b, (a_key, m_key) in zip(blocks, keys):
            a_col, m_col = self._group("attn", b.precision.attn), self._group("mlp", b.precision.mlp)
            f[a_col] += self._at(at[a_key], b.n_attn, "attention", why)
            f[m_col] += self._at(mt[m_key], b.n_mlp, "MLP", why)
            f["n_masked_blocks"] += masked  # blocks attending under a token-size mask (after a merge)
            if b.n_mlp != b.n_attn:
                rt = self.tables["reduce"].get(b.token_method)
                if rt is None:
                    why.append(f"token {b.token_method} not profiled")
                else:
                    f["reduce"] += self._at(rt, b.n_attn, f"token {b.token_method} from", why)
                masked = masked or b.token_method == "merge"
            f["n_gqa_blocks"] += b.kv_heads != b.q_heads
            for col in (a_col, m_col):  # per-format call overhead beyond the factor, and with token blocks
                f[f"nb_{col}"] += 1
                f[f"tok_{col}"] += reducing
        return [float(f.get(c, 0.0)) for c in self.columns], why

    def _group(self, part: str, precision: str) -> str:
        col = f"{part}_{precision}"
        return col if col in self._col else f"{part}_other"

    @staticmethod
    def _at(table: Table, n: int, what: str, why: list[str]) -> float:
        v, ok = table.at(n)
        if not ok:
            why.append(f"{what} {n} tokens (profiled {table.tokens[0]}..{table.tokens[-1]})")
        return v

    def _table(self, part: str, key: str, why: list[str]) -> Any:
        table = self.tables[part].get(key)
        if table is not None:
            return table
        # Another head count or width (per-block configs): scaled from the same format's tables by MACs.
        scaled = scaled_table(part, key, self.tables[part], self.dims)
        if scaled is not None:
            if not scaled.inside():
                why.append(f"{part} {key} not profiled (scaled from the nearest profiled size)")
            return scaled
        # Not profiled (another precision than the space held): the closest
        # profiled key stands in, and the prediction says it is out of range.
        why.append(f"{part} {key} not profiled")
        return min(self.tables[part].items(), key=lambda kv_: _key_distance(key, kv_[0]))[1]

    def sum_of_parts(self, config: Any) -> float:
        """The uncorrected sum of component latencies (ms), for diagnostics."""
        row, _ = self.features(config)
        return sum(v for c, v in zip(self.columns, row) if not is_count(c))

def _key_distance(a: str, b: str) -> float:
    pa, pb = a.split("-"), b.split("-")
    return sum(0 if x == y else 1 for x, y in zip(pa, pb)) + abs(len(pa) - len(pb))
