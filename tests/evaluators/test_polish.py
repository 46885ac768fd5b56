"""pick's polish: a cosine-decayed distillation that keeps its best val checkpoint."""

from __future__ import annotations

import copy

import torch

from vitsearch.evaluators import evaluate_accuracy
from vitsearch.evaluators.distill import distil_further, distilled, polished
from vitsearch.evaluators.fakequant import scheme_for
from vitsearch.spaces import CompressionConfig, prepare

CONFIG = CompressionConfig.from_dict({"depth": {"keep": 5}, "heads": {"keep": 3}})
FAST = dict(batch_size=16, seed=3)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_polish_keeps_the_checkpoint_its_score_rates_best_and_decays_to_zero(builtin_model, mnist, monkeypatch):
    student = distilled(builtin_model, CONFIG, mnist.train, steps=2, **FAST)
    start = _state(student)
    seen, lrs = {}, []
    step_of = iter(range(10))

    def score(model):  # rates the checkpoint at step 4 best; records each checkpoint's weights
        k = next(step_of)
        seen[k] = _state(model)
        assert not model.training
        return {0: 0.1, 1: 0.2, 2: 0.9, 3: 0.5}[k]

    real_step = torch.optim.AdamW.step

    def step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    out, info = polished(student, builtin_model, mnist.train, steps=6, rung=3, score=score, every=2, lr=1e-3, **FAST)
    assert info["best_step"] == 4 and list(info["scores"]) == [0, 2, 4, 6]
    assert all(torch.equal(v, seen[2][k]) for k, v in out.state_dict().items())  # the step-4 weights came back
    assert not all(torch.equal(v, start[k]) for k, v in seen[2].items())
    assert lrs[0] == 1e-3 and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-4  # cosine towards 0
    assert not out.training


def test_a_polish_that_never_beats_the_start_gives_the_start_back(builtin_model, mnist):
    student = distilled(builtin_model, CONFIG, mnist.train, steps=2, **FAST)
    start = _state(student)
    out, info = polished(student, builtin_model, mnist.train, steps=4, rung=3, every=2, **FAST,
                         score=lambda m: 0.5)
    assert info["best_step"] == 0 and all(torch.equal(v, start[k]) for k, v in out.state_dict().items())


def test_checkpoints_see_the_plain_model_under_quantisation_aware_distillation(builtin_model, mnist):
    """With fake quantisation and feature hooks in training, a checkpoint scores (and saves) the model's own
    modules; the stretches between checkpoints leave distillation without checkpoints seeded as before."""
    config = CompressionConfig.from_dict({"depth": {"keep": 5}, "precision": {"attn": "int8", "mlp": "int8"}})
    scheme = scheme_for("torchao", config, 1)
    student = prepare(builtin_model, config)
    keys = set(student.state_dict())

    def score(model):
        assert set(model.state_dict()) == keys and "FakeQuant" not in repr(model)
        return evaluate_accuracy(model, torch.utils.data.Subset(mnist.val, range(32))).top1

    a, info = polished(prepare(builtin_model, config), builtin_model, mnist.train, steps=4, rung=1, every=2,
                       score=score, fake_quant=scheme, feature_weight=0.5, **FAST)
    assert set(a.state_dict()) == keys and len(info["scores"]) == 3
    one = distil_further(prepare(builtin_model, config), builtin_model, mnist.train, steps=3, rung=1,
                         fake_quant=scheme, **FAST)
    two = distil_further(prepare(builtin_model, config), builtin_model, mnist.train, steps=3, rung=1,
                         fake_quant=scheme, **FAST)
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in one.state_dict().items())


def test_the_polish_can_keep_a_moving_average_of_the_weights_and_trains_on_as_without(builtin_model, mnist):
    """``ema``: checkpoints score (and the polish keeps) the average of the weights over the steps, computed here by
    hand from the weights after each step; the student trains on from its own weights (its steps are the same as
    without the average), under fake quantisation too (it rewraps the linears while it trains)."""
    config = CompressionConfig.from_dict({"depth": {"keep": 5}, "sparsity": {"mlp": "2:4"},
                                          "precision": {"attn": "int8"}})
    scheme = scheme_for("torchao", config, 1)
    student = distilled(builtin_model, config, mnist.train, steps=2, **FAST)
    start, decay = _state(student), 0.6
    runs, scored = {}, {}
    for ema in (0.0, decay):
        seen: list[dict] = []

        def score(model):  # the last checkpoint wins; what each checkpoint scored is kept
            seen.append(_state(model))
            return len(seen)

        out, info = polished(copy.deepcopy(student), builtin_model, mnist.train, steps=4, rung=3, every=2, lr=1e-3,
                             ema=ema, fake_quant=scheme, score=score, **FAST)
        runs[ema], scored[ema] = out.state_dict(), seen[-1]
    # by hand: the trajectory of the plain polish, averaged step by step
    steps: list[dict] = []
    replay = copy.deepcopy(student)
    own = replay.state_dict(keep_vars=True)  # its tensors by their names outside fake quantisation's wrappers
    polished(replay, builtin_model, mnist.train, steps=4, rung=3, every=2, lr=1e-3, fake_quant=scheme,
             score=lambda m: 0.0, progress=lambda step, total: steps.append({k: t.detach().clone()
                                                                            for k, t in own.items()}), **FAST)
    assert len(steps) == 4 and all(torch.equal(v, steps[-1][k]) for k, v in runs[0.0].items())
    average = {k: v.clone() for k, v in start.items()}
    for after in steps:
        for k, v in average.items():
            if v.is_floating_point():
                v.lerp_(after[k], 1 - decay)
    assert all(torch.allclose(v, average[k], atol=1e-6) for k, v in runs[decay].items())
    assert all(torch.equal(v, scored[decay][k]) for k, v in runs[decay].items())  # what was scored was kept
    assert not all(torch.equal(v, runs[0.0][k]) for k, v in runs[decay].items())
    fc1 = runs[decay]["blocks.0.mlp.fc1.weight"].reshape(-1, 4)
    assert ((fc1 == 0).sum(-1) >= 2).all()  # pruned weights stay zero in the average
