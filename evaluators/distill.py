"""Distillation "recovery" of a compressed model.

Teacher = the uncompressed base model; student = the compressed model before
quantization (``vitsearch.spaces.prepare``); loss = KL on logits softened by
``temperature`` (scaled by T^2) weighted ``alpha`` + cross-entropy on the labels
weighted ``1 - alpha``, plus ``feature_weight`` times the features' loss
(:func:`feature_loss`: each kept block's class token against the teacher block it came
from); AdamW; sparsity masks re-applied after every step. ``fake_quant`` (a runtime's
:class:`~vitsearch.evaluators.fakequant.FakeQuantScheme`) runs the quantised linears
through the runtime's quantisation while training (quantisation-aware distillation);
the weights trained and saved are the float ones, which the runtime (or ``finalize``)
then quantises for real. Seeded: the same arguments give the same weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from vitsearch.evaluators.augment import Mixed, augmented
from vitsearch.evaluators.fakequant import FakeQuantScheme, fake_quantised
from vitsearch.spaces.errors import ModelError
from vitsearch.spaces.vit.adapter import num_prefix_tokens


#: AdamW's learning rate, constant along a rung (the study's ``recovery.lr`` by default; 1e-4 until a
#: 16-config check, benchmarks/results/rung_lr16.json, gained 0.33 test points and followed the teacher closer)
DISTIL_LR = 5e-4

#: the augmentation's generator is seeded this far from its segment's seed (its own generator: the batches
#: drawn and torch's global draws are those of the same segment without augmentation)
AUGMENT_SEED_OFFSET = 1


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, mixed: Mixed | None = None) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels); with a ``mixed`` batch
    the CE term is its labels' cross-entropies weighted as the images were blended."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                  reduction="batchmean", log_target=True)
    if mixed is None:
        return alpha * t * t * kl + (1 - alpha) * F.cross_entropy(student_logits, labels)
    return alpha * t * t * kl + (1 - alpha) * sum(w * F.cross_entropy(student_logits, y)
                                                  for y, w in zip(mixed.labels, mixed.weights))


def feature_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over blocks of the squared error between paired features, relative to the teacher feature's power."""
    return sum(F.mse_loss(s, t) / t.pow(2).mean().clamp(min=1e-12) for s, t in zip(student, teacher)) / len(student)


def teacher_blocks(student: nn.Module) -> list[int]:
    """The teacher block each of ``student``'s blocks came from (depth pruning records what it kept)."""
    info = getattr(student, "vitsearch_info", None) or {}
    kept = (info.get("depth") or {}).get("kept")
    kept = list(range(len(student.blocks))) if kept is None else list(kept)
    if len(kept) != len(student.blocks):
        raise ModelError(f"recovery.feature_weight: the student has {len(student.blocks)} blocks but records "
                         f"{len(kept)} kept ones; cannot pair its features with the teacher's (set it to 0)")
    return kept


def _after_block(model: nn.Module, i: int) -> nn.Module:
    """The module whose input is block ``i``'s output (the next block's first norm, or the final norm).

    Hooked there, not on the block itself: a token-reducing block runs through
    ``forward_tokens``, which a block's own forward hooks never see.
    """
    return model.blocks[i + 1].norm1 if i + 1 < len(model.blocks) else model.norm


@contextlib.contextmanager
def block_features(student: nn.Module, teacher: nn.Module) -> Iterator[Callable[[], torch.Tensor]]:
    """Inside: a callable giving :func:`feature_loss` of the last student and teacher forwards (then cleared).

    A block's feature is its output's first (class) token, which token merging and
    pruning never move; a model without prefix tokens gives its tokens' mean.
    """
    def grab(store: list, prefix: int):
        return lambda _m, args: store.append(args[0][:, 0] if prefix else args[0].mean(1))

    got: tuple[list, list] = ([], [])
    handles = [_after_block(student, i).register_forward_pre_hook(grab(got[0], num_prefix_tokens(student)))
               for i in range(len(student.blocks))]
    handles += [_after_block(teacher, j).register_forward_pre_hook(grab(got[1], num_prefix_tokens(teacher)))
                for j in teacher_blocks(student)]

    def loss() -> torch.Tensor:
        try:
            if got[0] and got[0][0].shape != got[1][0].shape:
                raise ModelError(f"recovery.feature_weight: student features {tuple(got[0][0].shape)} differ from the "
                                 f"teacher's {tuple(got[1][0].shape)}; set it to 0 for this model")
            return feature_loss(*got)
        finally:
            got[0].clear()
            got[1].clear()
    try:
        yield loss
    finally:
        for h in handles:
            h.remove()


def recover(base: nn.Module, config, train: Dataset, *, steps: int, device: torch.device | str = "cpu",
            lr: float = DISTIL_LR, batch_size: int = 64, temperature: float = 2.0, alpha: float = 0.5,
            seed: int = 0, calibration=None, fake_quant: FakeQuantScheme | None = None,
            feature_weight: float = 0.0, augment: str = "none") -> nn.Module:
    """Compress ``base`` with ``config``, distil it for ``steps`` steps, then quantize (eager, ``finalize``).

    ``steps == 0`` is plain ``compress``. Returns a new model; ``base`` is untouched.
    """
    from vitsearch.spaces import finalize

    student = distilled(base, config, train, steps=steps, device=device, lr=lr, batch_size=batch_size,
                        temperature=temperature, alpha=alpha, seed=seed, calibration=calibration,
                        fake_quant=fake_quant, feature_weight=feature_weight, augment=augment)
    model = finalize(student, config, device=str(device))
    info = getattr(model, "vitsearch_info", None)
    if isinstance(info, dict):
        info["recovery_steps"] = steps
    return model


def distilled(base: nn.Module, config, train: Dataset, *, steps: int, device: torch.device | str = "cpu",
              lr: float = DISTIL_LR, batch_size: int = 64, temperature: float = 2.0, alpha: float = 0.5,
              seed: int = 0, calibration=None, fake_quant: FakeQuantScheme | None = None,
              feature_weight: float = 0.0, augment: str = "none") -> nn.Module:
    """The float model before quantization: ``prepare`` (structure, masks), then ``steps`` of distillation.

    ``fake_quant``: train through the runtime's quantisation of the candidate (the model
    returned is still the plain float one). ``augment``: how each batch is altered for
    teacher and student alike (:data:`~vitsearch.evaluators.augment.AUGMENTS`).
    Deterministic for a given seed, so an exported variant can be rebuilt exactly.
    """
    from vitsearch.spaces import prepare

    student = prepare(base, config, calibration=calibration, device=str(device))
    if steps > 0:
        _distil(student, base, train, steps, device, lr, batch_size, temperature, alpha, seed,
                fake_quant=fake_quant, feature_weight=feature_weight, augment=augment)
    return student


def _distil(student, teacher, train, steps, device, lr, batch_size, temperature, alpha, seed, progress=None,
            fake_quant: FakeQuantScheme | None = None, feature_weight: float = 0.0, cosine: bool = False,
            checkpoint: Callable[[int], None] | None = None, every: int = 0, augment: str = "none"):
    """``steps`` steps of AdamW at ``lr`` (decayed to 0 along a cosine when ``cosine``). ``checkpoint(step)``
    is called every ``every`` steps and after the last, on the plain student in eval mode (fake quantisation
    and feature hooks are off during the call; they wrap each stretch of steps between checkpoints).
    ``augment`` (:data:`~vitsearch.evaluators.augment.AUGMENTS`) alters each batch before both models see it,
    drawn from its own generator seeded by ``seed``."""
    from vitsearch.evaluators.latency.lock import step_aside
    from vitsearch.spaces import reapply_masks

    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + AUGMENT_SEED_OFFSET)
    torch.manual_seed(seed)
    sampler = RandomSampler(train, replacement=True, num_samples=steps * batch_size, generator=gen)
    batches = iter(DataLoader(train, batch_size=batch_size, sampler=sampler))
    teacher = teacher.to(device).eval()
    student = student.to(device).train()
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
    stretch = every if checkpoint is not None and every > 0 else steps
    step = 0
    while step < steps:
        features = block_features(student, teacher) if feature_weight > 0 else contextlib.nullcontext()
        with fake_quantised(student, fake_quant), features as features_loss:
            for _ in range(min(stretch, steps - step)):
                images, labels = next(batches)
                images, labels = images.to(device), labels.to(device)
                mixed = None
                if augment != "none":
                    mixed = augmented(images, labels, augment, aug_gen)
                    images = mixed.images
                with torch.no_grad():
                    target = teacher(images)
                loss = distillation_loss(student(images), target, labels, temperature, alpha, mixed)
                if features_loss is not None:
                    loss = loss + feature_weight * features_loss()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                reapply_masks(student)
                step += 1
                step_aside()  # a measurement waiting for the device goes first
                if progress is not None:
                    progress(step, steps)
        if checkpoint is not None:
            checkpoint(step)
            student.train()
    student.eval()


def segment_seed(seed: int, rung: int) -> int:
    """The seed of rung ``rung``'s distillation segment (rung 0 uses the study's seed)."""
    return seed + rung


def distil_further(student: nn.Module, teacher: nn.Module, train: Dataset, *, steps: int, rung: int,
                   device: torch.device | str = "cpu", lr: float = DISTIL_LR, batch_size: int = 64,
                   temperature: float = 2.0, alpha: float = 0.5, seed: int = 0, progress=None,
                   fake_quant: FakeQuantScheme | None = None, feature_weight: float = 0.0,
                   augment: str = "none") -> nn.Module:
    """Continue distilling a prepared ``student`` (in place) for ``steps`` more steps: rung ``rung``'s segment.

    A rung continues from the weights the candidate had at the previous rung with a fresh
    optimizer and its own seed (:func:`segment_seed`), so the chain of segments is
    deterministic and :func:`distilled_chain` rebuilds it exactly (given the same
    ``fake_quant``, ``feature_weight`` and ``augment``). ``progress(step, steps)`` is called after
    every step when given.
    """
    if steps > 0:
        _distil(student, teacher, train, steps, device, lr, batch_size, temperature, alpha, segment_seed(seed, rung),
                progress, fake_quant=fake_quant, feature_weight=feature_weight, augment=augment)
    return student


def polished(student: nn.Module, teacher: nn.Module, train: Dataset, *, steps: int, rung: int,
             score: Callable[[nn.Module], float], every: int, device: torch.device | str = "cpu", lr: float = DISTIL_LR,
             batch_size: int = 64, temperature: float = 2.0, alpha: float = 0.5, seed: int = 0, progress=None,
             fake_quant: FakeQuantScheme | None = None, feature_weight: float = 0.0,
             augment: str = "none", ema: float = 0.0) -> tuple[nn.Module, dict]:
    """A last, longer distillation of a prepared ``student`` (in place): the learning rate decays along a
    cosine to 0, and the weights kept are those ``score`` (e.g. val top-1) rated best at a checkpoint every
    ``every`` steps and at the end (the earliest of equals; the starting weights count as step 0).

    ``ema`` (0 < ema < 1): the weights scored and kept are an exponential moving average of the student's
    float weights over the steps, each step ``avg = ema * avg + (1 - ema) * weights`` from the starting weights
    (Polyak averaging; pruned weights stay zero in it); 0: the student's own weights.

    Returns (student, {"best_step", "scores": {step: score}}).
    """
    import copy

    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema: {ema} is not in [0, 1)")
    student.to(device)  # where it trains: the average is kept beside the tensors it averages
    scores = {0: score(student.eval())}
    best = {"step": 0, "state": copy.deepcopy(student.state_dict())}
    # (the student's own tensors, their average): by object, as fake quantisation rewraps the linears while it trains
    own = {id(t): t for t in student.state_dict(keep_vars=True).values() if t.is_floating_point()} if ema else {}
    averaged = [(t, t.detach().clone()) for t in own.values()]

    def each_step(step: int, total: int) -> None:
        with torch.no_grad():
            for live, avg in averaged:
                avg.lerp_(live, 1.0 - ema)
        if progress is not None:
            progress(step, total)

    def checkpoint(step: int) -> None:
        with torch.no_grad():
            trained = [live.clone() for live, _ in averaged]
            for live, avg in averaged:
                live.copy_(avg)
        scores[step] = score(student.eval())
        if scores[step] > scores[best["step"]]:
            best.update(step=step, state=copy.deepcopy(student.state_dict()))
        with torch.no_grad():  # training goes on from the student's own weights
            for (live, _), weights in zip(averaged, trained):
                live.copy_(weights)

    if steps > 0:
        _distil(student, teacher, train, steps, device, lr, batch_size, temperature, alpha, segment_seed(seed, rung),
                each_step, fake_quant=fake_quant, feature_weight=feature_weight, cosine=True,
                checkpoint=checkpoint, every=every, augment=augment)
    student.load_state_dict(best["state"])
    return student.eval(), {"best_step": best["step"], "scores": scores}


def distilled_chain(base: nn.Module, config, train: Dataset, *, rungs: tuple[int, ...] | list[int],
                    device: torch.device | str = "cpu", lr: float = DISTIL_LR, batch_size: int = 64,
                    temperature: float = 2.0, alpha: float = 0.5, seed: int = 0, calibration=None,
                    fake_quant: FakeQuantScheme | None = None, feature_weight: float = 0.0,
                    augment: str = "none") -> nn.Module:
    """The prepared float model after the rungs ``rungs`` (cumulative step counts), as the search built it."""
    kw = dict(device=device, lr=lr, batch_size=batch_size, temperature=temperature, alpha=alpha, seed=seed,
              fake_quant=fake_quant, feature_weight=feature_weight, augment=augment)
    student = distilled(base, config, train, steps=rungs[0], calibration=calibration, **kw)
    for k in range(1, len(rungs)):
        distil_further(student, base, train, steps=rungs[k] - rungs[k - 1], rung=k, **kw)
    return student


def save_prepared(model: nn.Module, path) -> None:
    """Write a prepared float model's state dict (plain tensors) atomically: a rung's checkpoint."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)


def load_prepared(base: nn.Module, config, path, calibration=None, device: torch.device | str = "cpu") -> nn.Module:
    """The prepared float model of ``config`` with the weights of a rung checkpoint (``weights_only=True``).

    ModelError (one line naming the file) when ``path`` is a folder or not a weights-only
    checkpoint (a pickle of anything but tensors is never unpickled).
    """
    from vitsearch.spaces import prepare

    student = prepare(base, config, calibration=calibration, device=str(device))
    student.load_state_dict(read_rung_checkpoint(path, device), strict=True)
    return student


def _load_error(exc: Exception) -> str:
    """What ``torch.load`` refused, in a few words (its message is a page of advice with terminal colours)."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\.\s|\s*Check the documentation|$)", text)
    return ((found.group(1) if found and found.group(1) else text) or type(exc).__name__)[:120]


def read_rung_checkpoint(path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict of a rung checkpoint; ModelError (one line) when it is not one."""
    from pathlib import Path

    from vitsearch.spaces.errors import ModelError

    path = Path(path)
    fix = "delete it (the rung is then distilled again, to the same weights) or restore the run dir from a copy"
    if path.is_dir():
        raise ModelError(f"rung checkpoint {str(path)!r} is a folder, not a weights file; {fix}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unsafe globals, zip and pickle errors, a missing file
        raise ModelError(f"rung checkpoint {str(path)!r} is not a weights-only checkpoint ({type(exc).__name__}: "
                         f"{_load_error(exc)}); {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"rung checkpoint {str(path)!r} holds a {type(state).__name__}, not a state dict; {fix}")
    return state
