"""Quantisation-aware and feature distillation: seeded, float checkpoints, promotions and rebuilds that replay it."""

from __future__ import annotations

import pytest
import torch
from tinystudy import tiny_study_dict

from vitsearch.evaluators.distill import (block_features, distilled, distilled_chain, load_prepared, save_prepared,
                                          teacher_blocks)
from vitsearch.evaluators.fakequant import scheme_for
from vitsearch.evaluators.runtimes.base import float_structure
from vitsearch.search.study import parse_study
from vitsearch.spaces import CompressionConfig, prepare

CONFIG = {"depth": {"keep": 6}, "precision": {"attn": "int8", "mlp": "int8"}}
PRUNED = {"depth": {"keep": 6}, "tokens": {"method": "merge", "schedule": {"2": 0.5}}}
FAST = dict(batch_size=16, seed=3)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_qad_is_seeded_and_saves_the_float_state_that_prepare_loads(builtin_model, mnist, tmp_path):
    """Two runs with one seed give the same weights, unlike distillation of the float model; the checkpoint holds
    the plain prepared keys (no fake-quant wrapper) and loads strictly into ``prepare`` of the config."""
    config = CompressionConfig.from_dict(CONFIG)
    scheme = scheme_for("ort", config, images=1)
    run = lambda fq: distilled(builtin_model, float_structure(config), mnist.train, steps=3,  # noqa: E731
                               calibration=mnist.calibration, fake_quant=fq, **FAST)
    first, again, post_training = run(scheme), run(scheme), run(None)
    assert _equal(_state(first), _state(again)) and not _equal(_state(first), _state(post_training))
    save_prepared(first, tmp_path / "r0.pt")
    fresh = prepare(builtin_model, float_structure(config), calibration=mnist.calibration)
    assert list(torch.load(tmp_path / "r0.pt", weights_only=True)) == list(fresh.state_dict())
    loaded = load_prepared(builtin_model, float_structure(config), tmp_path / "r0.pt", mnist.calibration)
    assert _equal(_state(loaded), _state(first))


def test_features_pair_each_kept_block_with_the_teacher_block_it_came_from(builtin_model, mnist):
    """Depth pruning's record pairs the blocks (token-merging blocks too); a student that is the teacher has no
    feature loss, a pruned one has; feature distillation is seeded and changes the weights."""
    images = mnist.val.tensors[0][:8]
    pruned = prepare(builtin_model, CompressionConfig.from_dict(PRUNED), calibration=mnist.calibration)
    kept = pruned.vitsearch_info["depth"]["kept"]
    assert teacher_blocks(pruned) == kept and len(kept) == 6 and kept != list(range(6))
    same = prepare(builtin_model, CompressionConfig(), calibration=mnist.calibration)
    with torch.no_grad():
        for student, zero in ((same, True), (pruned, False)):
            with block_features(student, builtin_model) as loss:
                student(images)
                builtin_model(images)
                value = float(loss())
            assert (value < 1e-10) == zero, value
    assert not any(m._forward_pre_hooks for m in builtin_model.modules())  # the teacher's hooks are gone
    run = lambda w: distilled(builtin_model, CompressionConfig.from_dict(PRUNED),  # noqa: E731
                              mnist.train, steps=2, calibration=mnist.calibration, feature_weight=w, **FAST)
    with_features = _state(run(1.0))
    assert _equal(with_features, _state(run(1.0))) and not _equal(with_features, _state(run(0.0)))


@pytest.fixture(scope="module")
def ort_session():
    from vitsearch.search.session import load_session

    return load_session(parse_study(tiny_study_dict(name="qad", recovery={"rungs": [2, 3], "reduction": 2,
                                                                                       "batch_size": 16,
                                                                                       "quantisation_aware": True},
                                                    latency={"batch_size": 1, "warmup": 1, "max_runs": 5,
                                                             "predictor": "off", "runtime": "onnxruntime"})))


def test_a_promotion_from_a_qad_checkpoint_equals_the_replayed_chain_and_the_rebuild(ort_session, tmp_path):
    """The pipeline distils with the runtime's scheme at every rung: rung 1 continued from the rung-0
    checkpoint equals the chain replayed with the same settings, and the test split's rebuild (pick's too)
    replays exactly that chain; without quantisation awareness the weights differ."""
    from dataclasses import replace

    from vitsearch.search.results.testacc import rebuild_prepared

    pipe = ort_session.pipeline
    config = CompressionConfig.from_dict(CONFIG)
    settings = pipe.recovery_settings(config)
    assert settings["fake_quant"] == scheme_for("ort", config, images=1) and "quantisation_aware" not in settings
    first, _ = pipe.evaluate(config, save_to=str(tmp_path / "r0.pt"))
    pipe.promote(config, first, 1, str(tmp_path / "r0.pt"), str(tmp_path / "r1.pt"))
    structure = pipe.runtime.structure(config)
    promoted = _state(load_prepared(ort_session.base, structure, tmp_path / "r1.pt", ort_session.data.calibration))
    chain = distilled_chain(ort_session.base, structure, ort_session.data.train, rungs=(2, 3),
                            calibration=ort_session.data.calibration, **settings)
    assert _equal(promoted, _state(chain))
    assert _equal(promoted, _state(rebuild_prepared(ort_session, config, 1)))  # no run dir: replayed
    float_only = replace(pipe, distill={**pipe.distill, "quantisation_aware": False})
    assert float_only.recovery_settings(config)["fake_quant"] is None
    post_training = distilled_chain(ort_session.base, structure, ort_session.data.train, rungs=(2, 3),
                                    calibration=ort_session.data.calibration, **float_only.recovery_settings(config))
    assert not _equal(promoted, _state(post_training))
