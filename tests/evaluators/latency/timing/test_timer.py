"""The one pass timer, its warm-up, what a failed first forward means, and the one measurement context.

CPU only: the CUDA clock and the clock ramp run on a GPU; their rules are tested here as
the pure functions they are built on. Nothing asserts a speed.
"""

from __future__ import annotations

import gc

import pytest
import torch

from vitsearch.evaluators.latency.timing.context import Measurement, torch_threads
from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
from vitsearch.evaluators.latency.timing.prepare import first_forward_error
from vitsearch.evaluators.latency.timing.roundrobin import time_round_robin
from vitsearch.evaluators.latency.timing.timer import RAMP_TOL, PassTimer, clocks_risen
from vitsearch.spaces.errors import ConfigError, DeviceError

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("private_lock_dir")


def test_timer_runs_n_passes_and_returns_each_passs_ms():
    calls = []
    timer = PassTimer(lambda: calls.append(sum(range(2000))), CPU)
    ms = timer(7)
    assert len(ms) == 7 == len(calls) and all(m > 0 for m in ms)
    assert timer(0) == [] and len(calls) == 7


def test_warm_up_on_cpu_runs_exactly_n_passes_and_at_least_one():
    calls = []
    timer = PassTimer(lambda: calls.append(1), CPU)
    assert len(timer.warm_up(4)) == 4 == len(calls)
    assert len(timer.warm_up(0)) == 1 and len(calls) == 5  # the first pass is never skipped: it checks the model


def test_the_clock_ramp_ends_when_a_round_is_no_longer_faster():
    assert not clocks_risen(None, 1.0)  # the first round has nothing to compare with
    assert not clocks_risen(2.0, 1.0)  # twice as fast as the round before: the clocks are still rising
    assert clocks_risen(1.0, 1.0) and clocks_risen(1.0, 1.2)
    assert clocks_risen(1.0, 1.0 - RAMP_TOL / 2) and not clocks_risen(1.0, 1.0 - 2 * RAMP_TOL)


@pytest.mark.parametrize("exc, kind, words", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), DeviceError, "ran out of memory"),
    (RuntimeError("CUDA error: no kernel image is available for execution on the device"), DeviceError,
     "no kernel"),
    (NotImplementedError("\"addmm_cuda\" not implemented for 'Float8_e4m3fn'"), DeviceError, "no kernel"),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), DeviceError, "doctor --device"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x784 and 196x10)"), ConfigError, "input_shape"),
    (AssertionError("Input height (30) doesn't match model (28)."), ConfigError, "input_shape"),
])
def test_a_failed_first_forward_says_what_it_is(exc, kind, words):
    err = first_forward_error(exc, (8, 3, 224, 224), "cuda:0")
    assert isinstance(err, kind) and words in str(err) and "\n" not in str(err)
    assert "(8, 3, 224, 224)" in str(err)


def test_an_unrelated_exception_is_not_turned_into_a_user_error():
    exc = TypeError("forward() missing 1 required positional argument")
    assert first_forward_error(exc, (1, 3, 28, 28), "cpu") is exc


def test_warm_up_reports_a_shape_error_in_one_line(tiny):
    x = torch.randn(1, 3, 28, 28)  # the built-in model takes one channel
    with pytest.raises(ConfigError, match="first forward on inputs of shape") as err:
        PassTimer(lambda: tiny(x), CPU).warm_up(2, (1, 3, 28, 28))
    assert "\n" not in str(err.value)


def test_measurement_sets_and_restores_threads_modes_and_the_collector():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout()).train()
    model[1].eval()  # mixed modes come back exactly
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with Measurement(CPU, 1, [model]) as m:
            assert torch.get_num_threads() == 1 and m.threads_now == 1
            assert not any(sub.training for sub in model.modules()) and torch.is_inference_mode_enabled()
            with m.timed():
                assert not gc.isenabled()
            assert gc.isenabled()
        assert torch.get_num_threads() == 2 and not torch.is_inference_mode_enabled()
    finally:
        torch.set_num_threads(before)
    assert model.training and model[0].training and not model[1].training


def test_torch_threads_sets_the_count_inside_and_restores_it_after_an_error_too():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(None):
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with torch_threads(1):
                assert torch.get_num_threads() == 1
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        with torch_threads(1):
            torch.set_num_threads(3)  # changed again inside: the count from before still comes back
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_round_robin_times_every_item_with_the_collector_off():
    seen: dict[str, list[bool]] = {"a": [], "b": []}
    fns = [lambda: seen["a"].append(gc.isenabled()), lambda: seen["b"].append(gc.isenabled())]
    plan = RoundRobinPlan(target_s=0.0, min_passes=6, max_passes=6, rounds=3, warmup=2)
    samples = time_round_robin(fns, plan, threads=1, device=CPU)
    assert [len(s) for s in samples] == [6, 6] and all(v > 0 for s in samples for v in s)
    assert all(len(v) == 2 + 6 for v in seen.values())  # warm-up, then 3 rounds of 2 passes
    assert all(v[-6:] == [False] * 6 for v in seen.values()) and gc.isenabled()


def test_burst_passes_run_with_the_collector_off(tiny):
    from vitsearch.evaluators.latency.measure import measure_latency

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(gc.isenabled())
            return tiny(x)

    r = measure_latency(Probe(), (1, 1, 28, 28), threads=1, warmup=2, min_runs=5, max_runs=5)
    assert r.n_runs == 5 and seen[:2] == [True, True] and seen[2:] == [False] * 5 and gc.isenabled()
