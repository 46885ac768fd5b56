"""Token-count arithmetic shared by the tokens knob and the adapter (no torch: config
validation imports it, and ``vitsearch --help`` must stay instant)."""

from __future__ import annotations

# One bipartite merge step pairs each token of one half with one of the other: it can
# remove at most half of the tokens.
MIN_MERGE_SHARE = 0.5


def reduced_count(num_patch: int, share: float) -> int:
    """Patch tokens left after a block with ``share`` (the one rounding rule)."""
    return max(1, round(share * num_patch))
