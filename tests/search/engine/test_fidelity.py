"""The evaluation flow of the rungs, in process (no Ray): test split unseen, promotions continue, no gain settled."""

from __future__ import annotations

import pytest
import torch
from tinystudy import tiny_study_dict

from vitsearch.search.study import parse_study

DOC = tiny_study_dict(data=None, latency={"max_runs": 20, "max_seconds": 0.2},
                      recovery={"rungs": [2, 4], "reduction": 2, "batch_size": 16})
CONFIG = {"depth": {"keep": 6}, "heads": {"kv_heads": 2, "keep": 6}}


@pytest.fixture(scope="module")
def session():
    from vitsearch.search.session import load_session

    return load_session(parse_study(DOC))


def test_the_search_never_touches_the_test_split(session, tmp_path, monkeypatch):
    """Every accuracy a search computes - first rung and promotion - is on val; workers hold no test split."""
    import vitsearch.evaluators as ev
    from vitsearch.spaces import CompressionConfig

    searched = session.for_search()
    assert searched.data.test is None and session.data.test is not None
    test_images = {t.numpy().tobytes() for t in session.data.test.tensors[0]}
    seen: list = []
    real = ev.evaluate_accuracy

    def spy(model, dataset, *args, **kwargs):
        seen.append(dataset)
        return real(model, dataset, *args, **kwargs)

    monkeypatch.setattr(ev, "evaluate_accuracy", spy)
    config = CompressionConfig.from_dict(CONFIG)
    first, _ = searched.pipeline.evaluate(config, save_to=str(tmp_path / "r0.pt"))
    second, _ = searched.pipeline.promote(config, first, 1, str(tmp_path / "r0.pt"), str(tmp_path / "r1.pt"))
    assert len(seen) == 2 and all(d is searched.data.val for d in seen)
    assert not any(x.numpy().tobytes() in test_images for d in seen for x in d.tensors[0])
    assert first["recovery_steps"] == 2 and second["recovery_steps"] == 4
    assert second["latency"] == first["latency"] and second["size_mb"] == first["size_mb"]


def test_a_promotion_continues_from_its_checkpoint_exactly(session, tmp_path):
    """Rung 1 from the saved rung-0 weights equals the replayed chain: nothing is trained from scratch."""
    from vitsearch.evaluators.distill import distilled_chain, load_prepared
    from vitsearch.spaces import CompressionConfig

    config = CompressionConfig.from_dict(CONFIG)
    first, _ = session.pipeline.evaluate(config, save_to=str(tmp_path / "r0.pt"))
    session.pipeline.promote(config, first, 1, str(tmp_path / "r0.pt"), str(tmp_path / "r1.pt"))
    saved = load_prepared(session.base, config, tmp_path / "r1.pt", session.data.calibration)
    chain = distilled_chain(session.base, config, session.data.train, rungs=(2, 4), batch_size=16,
                            calibration=session.data.calibration)
    for (k, a), b in zip(saved.state_dict().items(), chain.state_dict().values()):
        assert torch.equal(a, b), k
    # missing checkpoint (a run dir on another machine): the chain is replayed, same accuracy
    again, _ = session.pipeline.promote(config, first, 1, str(tmp_path / "absent.pt"), None)
    assert again["accuracy"] == session.pipeline.promote(config, first, 1, str(tmp_path / "r0.pt"), None)[0]["accuracy"]


def test_no_gain_is_settled_before_accuracy_work(session):
    from vitsearch.search.engine.gain import Reference
    from vitsearch.spaces import CompressionConfig

    ref = Reference(latency_ms=1e-6, size_mb=1e9, macs=10**12, latency_source="test",
                    cost_objectives=("latency_ms",))  # a stale run-start timing: anything looks slower
    int8 = CompressionConfig.from_dict({"precision": {"attn": "int8", "mlp": "int8"}})  # torchao int8: slower here
    metrics, why = session.pipeline.evaluate(int8, reference=ref)
    assert metrics["accuracy"] is None and why.startswith("no gain") and "recovery" not in metrics["phase_seconds"]
    # the stale figure's verdict (no ratio of the reference known) confirmed against the model timed now
    assert "reference latency" in metrics["phase_seconds"] and "of the uncompressed model (both timed" in why
    metrics, why = session.pipeline.evaluate(CompressionConfig.from_dict(CONFIG), reference=ref)
    assert why is None and metrics["accuracy"] is not None  # faster than the reference timed now: evaluated
    metrics, why = session.pipeline.evaluate(CompressionConfig(), reference=ref)  # the reference itself: never
    assert metrics["accuracy"] is not None and metrics["recovery_steps"] == 0  # the teacher is not distilled
    both = Reference(1e-6, 1e9, 10**12, "test", ("latency_ms", "size_mb"))  # smaller: a gain where size counts
    assert both.no_gain({"config": CONFIG, "latency": {"median_ms": 5.0}, "size_mb": 3.0, "macs": 1}) is None


def test_an_interleaved_ratio_decides_no_gain_whatever_the_run_start_timing():
    """Timed beside the uncompressed model, the ratio says slower or faster; the run-start ms may have drifted."""
    from vitsearch.search.engine.gain import Reference

    ref = Reference(latency_ms=4.5, size_mb=1e9, macs=10**12, latency_source="measured at run start",
                    cost_objectives=("latency_ms",), latency_ratio=1.0)  # eager: the reference itself
    drifted = {"median_ms": 4.37, "ratio": 1.018, "ratio_low": 0.989, "ratio_high": 1.050, "n_runs": 152,
               "source": "measured"}  # below the run-start 4.5 ms, slower than the reference timed beside it
    why = ref.no_gain({"config": CONFIG, "latency": drifted})
    assert why.startswith("no gain") and "x1.018 [0.989, 1.050] of the uncompressed model" in why and "152 passes" in why
    assert ref.constraint({"latency": drifted}) == pytest.approx(0.018 * 4.5)  # ms slower, by the ratio
    faster = {**drifted, "median_ms": 4.6, "ratio": 0.97, "ratio_low": 0.95, "ratio_high": 0.99}
    assert ref.no_gain({"config": CONFIG, "latency": faster}) is None  # above 4.5 ms, faster beside it
    alone = {"median_ms": 4.6, "source": "measured"}  # timed alone: the ms against the reference's
    assert "4.600 ms > uncompressed 4.500 ms" in ref.no_gain({"config": CONFIG, "latency": alone})
    predicted = {**faster, "source": "predicted"}  # a prediction's ratio is not a timing beside the reference
    assert "predicted latency 4.600 ms > uncompressed 4.500 ms" in ref.no_gain({"config": CONFIG, "latency": predicted})
