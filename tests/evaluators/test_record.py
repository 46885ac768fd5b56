"""The Evaluation record: JSON round trip, validation, human summary."""

from __future__ import annotations

import json

import pytest

from vitsearch.evaluators.latency.timing.results import LatencyResult
from vitsearch.evaluators.record import Evaluation, latency_entry
from vitsearch.spaces import CompressionConfig
from vitsearch.spaces.errors import ConfigError

FP = {"kind": "cpu", "device": "cpu", "cpu_model": "AMD EPYC", "threads": 1, "fingerprint_id": "0123456789ab"}


def _measured() -> LatencyResult:
    return LatencyResult(median_ms=2.5, p10_ms=2.4, p90_ms=2.9, mean_ms=2.6, n_runs=120, n_warmup=10,
                         input_shape=(1, 1, 28, 28), batch=1, device="cpu", threads=1, stable=True,
                         stop_reason="stable", timed_seconds=0.3, fingerprint=FP)


def _evaluation(**kw) -> Evaluation:
    config = CompressionConfig.from_dict({"depth": {"keep": 4}, "tokens": {"schedule": {"1": 0.7}}})
    base = dict(config=config.to_dict(), accuracy=0.9731, top5=0.998,
                accuracy_source="val split of mnist5k, 1000 images", size_mb=2.73, size_mb_sparse_storage=2.73,
                macs=36_171_936, latency=latency_entry(_measured()), fingerprint=FP, recovery_steps=200,
                phase_seconds={"compress": 0.21, "recovery": 4.5, "accuracy": 0.8, "latency": 0.4})
    return Evaluation(**{**base, **kw})


def test_json_round_trip():
    ev = _evaluation()
    again = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert again == ev
    assert again.latency["source"] == "measured" and again.latency["n_runs"] == 120
    assert CompressionConfig.from_dict(again.config).depth.keep == 4


def test_summary_says_how_each_number_was_obtained():
    lines = _evaluation().summary_lines()
    text = "\n".join(lines)
    assert "depth 4" in lines[0]
    assert "97.31%" in text and "measured on val split of mnist5k, 1000 images" in text
    assert "measured over 120 timed passes on cpu [AMD EPYC, 1 threads], batch 1, fingerprint 0123456789ab" in text
    assert "counted from the bytes" in text and "analytic" in text and "200 distillation steps" in text
    assert "wall time (measured)" in text


def test_predicted_latency_is_labelled():
    predicted = latency_entry(median_ms=1.75, device="cpu", fingerprint_id="0123456789ab", batch=1)
    ev = _evaluation(latency=predicted, recovery_steps=0, top5=None)
    text = "\n".join(ev.summary_lines())
    assert "1.750 ms predicted" in text and "measured over" not in text
    assert "none (scored straight after compression)" in text
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    with_interval = latency_entry(median_ms=1.75, device="cpu", batch=1,
                                  interval={"low_ms": 1.5, "high_ms": 2.0, "confidence": 0.9, "ratio": 0.7})
    text = "\n".join(_evaluation(latency=with_interval, recovery_steps=0, top5=None).summary_lines())
    assert "1.750 ms [1.500, 2.000] (90 %) predicted" in text


@pytest.mark.parametrize(
    "kw, match",
    [(dict(accuracy=1.5), "evaluation.accuracy"), (dict(macs=-1), "evaluation.macs"),
     (dict(size_mb=float("nan")), "evaluation.size_mb"), (dict(recovery_steps=-3), "recovery_steps"),
     (dict(recovery_threads=0), "evaluation.recovery_threads: 0"), (dict(recovery_threads=True), "recovery_threads"),
     (dict(latency={"median_ms": 1.0}), "evaluation.latency: missing"),
     (dict(latency={**latency_entry(median_ms=1.0), "source": "guessed"}), "latency.source")],
)
def test_invalid_values_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        _evaluation(**kw)


def test_unknown_field_and_newer_schema_refused():
    data = _evaluation().to_dict()
    with pytest.raises(ConfigError, match="unknown field"):
        Evaluation.from_dict({**data, "speed": 3})
    with pytest.raises(ConfigError, match="schema_version"):
        Evaluation.from_dict({**data, "schema_version": 99})
