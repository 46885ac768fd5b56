"""Augmentations for distillation: what each does to a batch, seeded, and the loss of a blended batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitsearch.evaluators.augment import AFFINE, AUGMENTS, SHIFT_PX, affine_warped, augmented, shifted
from vitsearch.evaluators.distill import distillation_loss


def _batch(n=6):
    images = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return images, torch.arange(n) % 3


def test_a_shift_moves_each_image_within_the_bound_and_repeats_the_border():
    images, _ = _batch()
    out = shifted(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    moved = 0
    for img, new in zip(images, out):  # each output is its own input moved by some (dy, dx) within the bound
        padded = F.pad(img[None], (SHIFT_PX,) * 4, mode="replicate")[0]
        offsets = [(dy, dx) for dy in range(2 * SHIFT_PX + 1) for dx in range(2 * SHIFT_PX + 1)
                   if torch.equal(padded[:, dy:dy + 8, dx:dx + 8], new)]
        assert offsets, "not a shift of its own image"
        moved += (SHIFT_PX, SHIFT_PX) not in offsets
    assert moved >= 3  # offsets are drawn per image, not one for the batch


def test_a_shift_keeps_rows_and_columns_apart_on_a_wide_image():
    image = torch.arange(3 * 7, dtype=torch.float).reshape(1, 1, 3, 7)
    out = shifted(image, torch.Generator().manual_seed(0), px=1)
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")[0, 0]
    assert any(torch.equal(padded[dy:dy + 3, dx:dx + 7], out[0, 0]) for dy in range(3) for dx in range(3))


def test_affine_is_the_identity_at_zero_and_warps_each_image_its_own_way():
    images, labels = _batch()
    still = affine_warped(images, torch.Generator().manual_seed(0), rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0)
    assert torch.allclose(still, images, atol=1e-5)
    m = augmented(images, labels, "affine", torch.Generator().manual_seed(3))
    assert m.images.shape == images.shape and torch.equal(m.labels[0], labels) and m.weights == (1.0,)
    same = [torch.allclose(a, b, atol=1e-5) for a, b in zip(m.images, images)]
    assert not any(same)
    # one image repeated: each copy gets its own rotation, scale and offset
    copies = affine_warped(images[:1].repeat(4, 1, 1, 1), torch.Generator().manual_seed(3))
    assert len({tuple(c.flatten()[:8].tolist()) for c in copies}) == 4


def test_affine_is_the_built_in_models_training_warp():
    from vitsearch.evaluators.training import Recipe, augment

    recipe = Recipe()
    assert AFFINE == dict(rotate_deg=recipe.rotate_deg, scale=recipe.scale, shift=recipe.shift)
    images, labels = _batch()
    trained = augment(images, recipe, torch.Generator().manual_seed(4))
    assert torch.equal(trained, augmented(images, labels, "affine", torch.Generator().manual_seed(4)).images)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    images, labels = _batch()
    a, b, c = (augmented(images, labels, "shift+mixup", torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a.images, b.images) and a.weights == b.weights
    assert not torch.equal(a.images, c.images)


def test_mixup_blends_pairs_of_the_batch_and_weighs_their_labels_alike():
    images, labels = _batch()
    m = augmented(images, labels, "mixup", torch.Generator().manual_seed(2))
    lam, rest = m.weights
    assert 0 <= lam <= 1 and lam + rest == pytest.approx(1.0)
    assert torch.equal(m.labels[0], labels)
    partner = [min(range(len(images)), key=lambda j: (m.images[i] - lam * images[i] - rest * images[j]).abs().max())
               for i in range(len(images))]
    assert all(torch.allclose(m.images[i], lam * images[i] + rest * images[j], atol=1e-6) for i, j in enumerate(partner))
    assert torch.equal(labels[partner], m.labels[1])


def test_the_hard_label_term_of_a_blended_batch_mixes_the_two_labels_cross_entropies():
    logits, teacher = torch.randn(4, 3), torch.randn(4, 3)
    y1, y2 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    m = augmented(torch.zeros(4, 1, 2, 2), y1, "mixup", torch.Generator().manual_seed(0))
    m = type(m)(m.images, (y1, y2), (0.25, 0.75))
    expected = 0.5 * 4 * F.kl_div(F.log_softmax(logits / 2, -1), F.log_softmax(teacher / 2, -1),
                                  reduction="batchmean", log_target=True) \
        + 0.5 * (0.25 * F.cross_entropy(logits, y1) + 0.75 * F.cross_entropy(logits, y2))
    assert torch.allclose(distillation_loss(logits, teacher, y1, 2.0, 0.5, m), expected)
    before = 0.5 * 4 * F.kl_div(F.log_softmax(logits / 2, -1), F.log_softmax(teacher / 2, -1),
                                reduction="batchmean", log_target=True) + 0.5 * F.cross_entropy(logits, y1)
    assert torch.equal(distillation_loss(logits, teacher, y1, 2.0, 0.5), before)  # no augmentation: as before


def test_an_unknown_augmentation_is_refused_naming_the_choices():
    images, labels = _batch()
    with pytest.raises(ValueError, match="'rotate' is not one of none, shift, affine, mixup"):
        augmented(images, labels, "rotate", torch.Generator())
    assert AUGMENTS[0] == "none"


def test_the_polish_feeds_teacher_and_student_the_same_altered_batch(builtin_model, mnist):
    import copy

    from vitsearch.evaluators.distill import AUGMENT_SEED_OFFSET, distilled, polished, segment_seed
    from vitsearch.spaces import CompressionConfig

    student = distilled(builtin_model, CompressionConfig.from_dict({"depth": {"keep": 5}}), mnist.train, steps=1,
                        batch_size=8, seed=0)

    def inputs(augment):
        seen = {"teacher": [], "student": []}
        teacher, pupil = copy.deepcopy(builtin_model), copy.deepcopy(student)
        hooks = [m.register_forward_pre_hook(lambda _m, args, who=who: seen[who].append(args[0].clone()))
                 for who, m in (("teacher", teacher), ("student", pupil))]
        polished(pupil, teacher, mnist.train, steps=2, rung=1, every=2, score=lambda m: 0.0, batch_size=8, seed=0,
                 augment=augment)
        for h in hooks:
            h.remove()
        return seen["teacher"], [x for x in seen["student"] if x.shape[0] == 8]

    plain_teacher, plain_student = inputs("none")
    shift_teacher, shift_student = inputs("shift")
    assert len(shift_teacher) == 2 and all(torch.equal(a, b) for a, b in zip(shift_teacher, shift_student))
    assert all(torch.equal(a, b) for a, b in zip(plain_teacher, plain_student))
    gen = torch.Generator().manual_seed(segment_seed(0, 1) + AUGMENT_SEED_OFFSET)
    assert all(torch.equal(shifted(a, gen), b) for a, b in zip(plain_teacher, shift_teacher))  # the same draws


def test_a_study_that_augments_distils_every_rung_so_and_picks_rebuild_replays_it(tmp_path):
    """recovery.augment reaches the first rung and each promotion, and the chain pick replays equals the saved rung."""
    from tinystudy import tiny_study_dict

    from vitsearch.evaluators.distill import distilled_chain, load_prepared
    from vitsearch.search.results.testacc import rebuild_prepared
    from vitsearch.search.session import load_session
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import CompressionConfig

    doc = tiny_study_dict(data=None, latency={"max_runs": 5, "max_seconds": 0.1},
                          recovery={"rungs": [2, 4], "reduction": 2, "batch_size": 16, "augment": "shift"})
    session = load_session(parse_study(doc))
    config = CompressionConfig.from_dict({"depth": {"keep": 6}})
    assert session.pipeline.recovery_settings(config)["augment"] == "shift"
    first, _ = session.pipeline.evaluate(config, save_to=str(tmp_path / "r0.pt"))
    session.pipeline.promote(config, first, 1, str(tmp_path / "r0.pt"), str(tmp_path / "r1.pt"))
    saved = load_prepared(session.base, config, tmp_path / "r1.pt", session.data.calibration)
    kw = dict(rungs=(2, 4), batch_size=16, calibration=session.data.calibration)
    shift = distilled_chain(session.base, config, session.data.train, augment="shift", **kw)
    plain = distilled_chain(session.base, config, session.data.train, **kw)
    rebuilt = rebuild_prepared(session, config, 1)  # pick without the run's checkpoint: the chain replayed
    for other in (shift, rebuilt):
        assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), other.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), plain.state_dict().values()))


def test_a_missing_rung_is_replayed_at_the_threads_the_search_distilled_it_with(tmp_path, monkeypatch, capsys):
    """The record says how many torch threads distilled the candidate; pick's replay of a missing checkpoint runs
    at that count (CPU kernels sum in another order at another), says so, and gives the process its own back."""
    from tinystudy import tiny_study_dict

    from vitsearch.evaluators import distill
    from vitsearch.evaluators.distill import load_prepared
    from vitsearch.search.results.testacc import rebuild_prepared
    from vitsearch.search.session import load_session
    from vitsearch.search.study import parse_study
    from vitsearch.spaces import CompressionConfig

    doc = tiny_study_dict(data=None, latency={"max_runs": 5, "max_seconds": 0.1},
                          recovery={"rungs": [2, 4], "reduction": 2, "batch_size": 16})
    session = load_session(parse_study(doc))
    config = CompressionConfig.from_dict({"depth": {"keep": 6}})
    rungs = tmp_path / "rungs"
    own = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first, _ = session.pipeline.evaluate(config, save_to=str(rungs / "r0.pt"))
        second, _ = session.pipeline.promote(config, first, 1, str(rungs / "r0.pt"), str(rungs / "r1.pt"))
    finally:
        torch.set_num_threads(own)
    assert first["recovery_threads"] == second["recovery_threads"] == 1
    saved = load_prepared(session.base, config, rungs / "r1.pt", session.data.calibration)
    seen = []
    real = distill.distilled_chain

    def chain(*args, **kw):  # the real chain, noting the threads it ran at
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    monkeypatch.setattr(distill, "distilled_chain", chain)
    torch.set_num_threads(2)
    try:
        rebuilt = rebuild_prepared(session, config, 1, tmp_path, 0, second["recovery_threads"])  # no trial-0 file
        assert seen == [1] and torch.get_num_threads() == 2
        assert "at the 1 torch thread(s) its last rung was distilled with" in capsys.readouterr().err
        assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), rebuilt.state_dict().values()))
        rebuild_prepared(session, config, 1, tmp_path, 0, float("nan"))  # an older run: not recorded
        assert seen == [1, 2] and "thread count is not recorded" in capsys.readouterr().err
    finally:
        torch.set_num_threads(own)
