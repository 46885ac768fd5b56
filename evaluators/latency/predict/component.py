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
from typing import Any

from vitsearch.spaces.knobs.tokens import tokens_per_block

from vitsearch.evaluators.latency.predict.base import LatencyPredictor
from vitsearch.evaluators.latency.predict.keys import attn_key, hidden_for, is_count, mlp_key


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
        """The correction model's feature row for ``config``, and why it is out of range."""
        d, why = self.dims, []
        h = config.heads.keep or d.num_heads
        kv = config.heads.kv_heads or h
        pa, pm = config.precision.attn, config.precision.mlp
        at = self._table("attn", attn_key(h, kv, pa, config.sparsity.attn), why)
        mt = self._table("mlp", mlp_key(hidden_for(d, config.sparsity.mlp), pm, config.sparsity.mlp), why)
        per = tokens_per_block(config, d.num_patches, d.num_prefix_tokens, d.depth)
        method = config.tokens.method
        rt = self.tables["reduce"].get(method)
        reducing = any(s < 1.0 for _, s in config.tokens.schedule)
        masked = n_masked = 0
        attn_ms = mlp_ms = red_ms = 0.0
        for n_a, n_m in per:
            attn_ms += self._at(at, n_a, "attention", why)
            mlp_ms += self._at(mt, n_m, "MLP", why)
            n_masked += masked
            if n_m != n_a:
                if rt is None:
                    why.append(f"token {method} not profiled")
                else:
                    red_ms += self._at(rt, n_a, f"token {method} from", why)
                masked = masked or method == "merge"
        nb, col = len(per), self._col
        a_col = f"attn_{pa}" if f"attn_{pa}" in col else "attn_other"
        m_col = f"mlp_{pm}" if f"mlp_{pm}" in col else "mlp_other"
        f = {"stem": self.stem_ms, a_col: attn_ms, m_col: mlp_ms, "reduce": red_ms, "n_blocks": nb,
             "n_token_blocks": nb if reducing else 0, "n_masked_blocks": n_masked,
             "n_gqa_blocks": nb if kv != h else 0, "const": 1.0,
             # per-format call overhead beyond the factor, and its interplay with token blocks
             f"nb_{a_col}": nb, f"nb_{m_col}": nb, f"tok_{a_col}": nb if reducing else 0,
             f"tok_{m_col}": nb if reducing else 0}
        return [float(f.get(c, 0.0)) for c in self.columns], why

    @staticmethod
    def _at(table: Table, n: int, what: str, why: list[str]) -> float:
        v, ok = table.at(n)
        if not ok:
            why.append(f"{what} {n} tokens (profiled {table.tokens[0]}..{table.tokens[-1]})")
        return v

    def _table(self, part: str, key: str, why: list[str]) -> Table:
        table = self.tables[part].get(key)
        if table is not None:
            return table
        # Not profiled (another precision / width than the space held): the closest
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
