"""The interleaved latency protocol: ratio and interval, stop rule, JSON, bad settings, GC, the sitting spread.

Real tiny models on CPU, one thread. Nothing asserts a speed: only counts, stop reasons
and ratios far from any noise (a model against itself, a model doing twice the work).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from vitsearch.evaluators.latency.measure import measure_latency
from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
from vitsearch.evaluators.latency.timing.plans import InterleavePlan
from vitsearch.evaluators.latency.timing.results import PROTOCOL, InterleavedResult, LatencyResult
from vitsearch.evaluators.models import create_vitsearch_tiny
from vitsearch.spaces.errors import ConfigError

SHAPE = (1, 1, 28, 28)


pytestmark = pytest.mark.usefixtures("private_lock_dir")


class Twice(torch.nn.Module):
    """Exactly twice the base model's work per forward."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        self.m(x)
        return self.m(x)


def fixed(pairs: int, chunk: int = 2, confidence: float = 0.95) -> InterleavePlan:
    """A plan that always takes exactly ``pairs`` chunk pairs (unreachable target, no time cap)."""
    return InterleavePlan(chunk=chunk, target_halfwidth=1e-4, max_seconds=3600, min_pairs=pairs, max_pairs=pairs,
                          warmup=1, confidence=confidence)


def test_model_against_itself_has_an_interval_containing_one(tiny):
    r = measure_interleaved(tiny, tiny, SHAPE, threads=1, plan=fixed(30, confidence=0.999))
    assert r.ci_low <= 1.0 <= r.ci_high
    assert r.chunks == 30 and r.passes == 60 and r.stop_reason == "max_pairs"
    assert r.ms == pytest.approx(r.ratio * r.reference_ms_now) and r.basis == "reference now"


def test_twice_the_work_is_clearly_slower(tiny):
    r = measure_interleaved(Twice(tiny), tiny, SHAPE, threads=1, plan=fixed(20))
    assert r.ci_low > 1.3 and r.ratio < 3.0


def test_stop_rule_counts(tiny):
    easy = InterleavePlan(chunk=1, target_halfwidth=0.5, min_pairs=6, check_every=2, max_seconds=3600, warmup=1)
    r = measure_interleaved(tiny, tiny, SHAPE, threads=1, plan=easy)
    # how soon the target is met depends on the machine's noise; that it is checked only from
    # min_pairs on, every check_every pairs, and stops there, does not
    assert r.stop_reason == "target" and r.chunks >= 6 and r.chunks % 2 == 0 and r.passes == r.chunks
    assert r.halfwidth <= 0.5
    capped = measure_interleaved(tiny, tiny, SHAPE, threads=1, plan=fixed(8, chunk=3))
    assert capped.stop_reason == "max_pairs" and capped.chunks == 8 and capped.passes == 24
    timed = InterleavePlan(chunk=1, target_halfwidth=1e-4, min_pairs=3, check_every=2, max_seconds=1e-3, warmup=1)
    r = measure_interleaved(tiny, tiny, SHAPE, threads=1, plan=timed)
    assert r.stop_reason == "max_seconds" and r.chunks == 3  # never before min_pairs


def test_plain_callables_and_profile_basis():
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1
        return sum(range(300))

    def b():
        calls["b"] += 1
        return sum(range(300))

    r = measure_interleaved(a, b, threads=1, plan=fixed(4, chunk=2), reference_ms_profile=5.0, keep_samples=True)
    assert calls["a"] == calls["b"] == 1 + 4 * 2  # one warm-up pass each, then the chunks
    assert r.basis == "reference in profile" and r.ms == pytest.approx(5.0 * r.ratio)
    assert r.ms_ci == pytest.approx((5.0 * r.ci_low, 5.0 * r.ci_high))
    assert len(r.samples["candidate"]) == len(r.samples["reference"]) == 8 and len(r.samples["log_ratios"]) == 4
    with pytest.raises(ConfigError, match="neither a torch module nor a callable"):
        measure_interleaved(42, b, plan=fixed(3))
    with pytest.raises(ConfigError, match="input_shape"):
        measure_interleaved(create_vitsearch_tiny(), b, plan=fixed(3))


def test_json_round_trip_and_latency_result(tiny):
    r = measure_interleaved(tiny, tiny, SHAPE, threads=1, plan=fixed(3))
    again = InterleavedResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and again.protocol == PROTOCOL and again.samples is None
    lat = measure_latency(tiny, SHAPE, threads=1, warmup=1, reference=tiny,
                          interleave={"chunk": 1, "min_pairs": 3, "max_pairs": 3})
    assert lat.protocol == PROTOCOL and lat.n_runs == 3 and lat.low_ms <= lat.median_ms <= lat.high_ms
    assert lat.ratio_low <= lat.ratio <= lat.ratio_high and lat.thread_info["available"]
    assert LatencyResult.from_dict(json.loads(json.dumps(lat.to_dict()))) == lat
    assert "interleaved" in lat.summary()


def test_threads_and_modes_restored():
    model = create_vitsearch_tiny().train()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = measure_interleaved(model, model, SHAPE, threads=1, plan=fixed(3))
        assert torch.get_num_threads() == 2 and r.threads == 1
    finally:
        torch.set_num_threads(before)
    assert model.training and all(m.training for m in model.modules())


def test_cost_balanced_chunk_sizes():
    """With chunk_ms each side fills the same wall time; the cheaper side gets more passes, within the bounds."""
    from vitsearch.evaluators.latency.timing.interleaved import chunk_sizes

    assert chunk_sizes(InterleavePlan(chunk=4), [45.0, 5.0]) == (4, 4)  # off: chunk each
    assert chunk_sizes(InterleavePlan(chunk=1, chunk_ms=25.0), [45.0, 5.0]) == (1, 9)  # 45 ms of each side
    assert chunk_sizes(InterleavePlan(chunk=1, chunk_ms=25.0), [2.0, 5.0]) == (12, 5)  # 25 ms of each side
    assert chunk_sizes(InterleavePlan(chunk=2, chunk_ms=25.0), [45.0, 5.0]) == (2, 18)
    assert chunk_sizes(InterleavePlan(chunk=1, chunk_ms=25.0, max_chunk=8), [0.01, 5.0]) == (8, 5)


def test_settling_passes_follow_each_switch_of_side_and_are_not_timed():
    """ABBA order C R | R C | C R | R C: a side settles only when the other ran last."""
    calls = {"c": 0, "r": 0}

    def side(name, ms):
        def run():
            calls[name] += 1
            time.sleep(ms / 1000)
        return run

    plan = InterleavePlan(chunk=1, chunk_ms=6.0, settle=1, min_pairs=4, max_pairs=4, warmup=2,
                          target_halfwidth=1e-4, max_seconds=3600)
    r = measure_interleaved(side("c", 3.0), side("r", 0.5), lock=False, plan=plan, keep_samples=True)
    # the chunk sizes follow the warm-up's timings, which a loaded machine can invert (a 0.5 ms sleep overrun to
    # more than 3 ms): the counts below hold whatever they are
    assert r.settle == 1 and r.chunk >= 1 and r.reference_chunk >= 1
    assert len(r.samples["candidate"]) == 4 * r.chunk and len(r.samples["reference"]) == 4 * r.reference_chunk
    assert calls["c"] == 2 + 3 + 4 * r.chunk  # warm-up 2, settles before pairs 1, 2 and 4
    assert calls["r"] == 2 + 2 + 4 * r.reference_chunk  # settles in pairs 1 and 3


@pytest.mark.parametrize("field, value", [("chunk", 0), ("chunk", 65), ("target_halfwidth", 0.0),
                                          ("target_halfwidth", 0.9), ("max_seconds", -1.0), ("min_pairs", 2),
                                          ("confidence", 1.0), ("settle", -1), ("settle", 65), ("chunk_ms", -1.0),
                                          ("max_chunk", 2)])
def test_bad_plan_is_one_line(field, value):
    with pytest.raises(ConfigError, match=f"latency.interleave.{field}") as err:
        InterleavePlan(**{field: value}).checked()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("interleave", [{"chunk": 0}, {"target_halfwidth": 0.9}, {"max_seconds": 0},
                                        {"min_pairs": 10, "max_pairs": 5}, {"chunks": 4}, {"settle": 99},
                                        {"chunk_ms": -5}])
def test_bad_study_settings_exit_2(interleave):
    from vitsearch.search.study import parse_study

    with pytest.raises(ConfigError, match="latency.interleave") as err:
        parse_study({"latency": {"interleave": interleave}})
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_no_garbage_collection_pauses_a_timed_pass_and_the_collector_is_restored():
    """Collected before the timed passes, off during them (as timeit does), back on afterwards."""
    import gc

    seen = []
    fn = lambda: seen.append(gc.isenabled())  # noqa: E731
    plan = InterleavePlan(chunk=2, min_pairs=3, max_pairs=3, warmup=1)
    measure_interleaved(fn, fn, lock=False, plan=plan)
    assert seen[-12:] == [False] * 12 and gc.isenabled()  # the 3 pairs of 2 x 2 timed passes
    gc.disable()
    try:
        measure_interleaved(fn, fn, lock=False, plan=plan)
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def test_the_interval_includes_the_sitting_spread_and_keeps_the_sittings_own():
    import math

    from vitsearch.evaluators.latency.stats import widen

    assert widen(2.0, 1.9, 2.1, None, 0.95) == (1.9, 2.1)
    lo, hi = widen(2.0, 1.9, 2.1, 0.03, 0.95)
    z = 1.959964
    assert math.log(2.0 / lo) == pytest.approx(math.hypot(math.log(2.0 / 1.9), z * 0.03), rel=1e-6)
    assert math.log(hi / 2.0) == pytest.approx(math.hypot(math.log(2.1 / 2.0), z * 0.03), rel=1e-6)

    fn = lambda: sum(range(200))  # noqa: E731
    plain = measure_interleaved(fn, fn, lock=False, plan=fixed(6))
    wide = measure_interleaved(fn, fn, lock=False, plan=fixed(6), sitting_sd=0.05)
    assert plain.sitting_sd is None and (plain.within_low, plain.within_high) == (plain.ci_low, plain.ci_high)
    assert wide.sitting_sd == 0.05 and wide.ci_low < wide.within_low <= wide.ratio <= wide.within_high < wide.ci_high
    assert math.log(wide.ci_high / wide.ci_low) > 2 * z * 0.05 - 1e-9  # at least the spread's own width
    assert wide.ms_ci == pytest.approx((wide.ci_low * wide.reference_ms_now, wide.ci_high * wide.reference_ms_now))
    assert "sitting-to-sitting spread 5.0 %" in wide.summary() and "not measured" in plain.summary()
    with pytest.raises(ConfigError, match="sitting_sd"):
        measure_interleaved(fn, fn, lock=False, plan=fixed(3), sitting_sd=-0.1)
