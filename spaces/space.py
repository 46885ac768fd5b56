"""SearchSpace: a study file's ``space:`` section turned into Optuna distributions.

Every knob owns its part (:mod:`vitsearch.spaces.knobs.subspace`): the sub-space model
of the study file, the parameters it contributes and their decoding. :data:`SpaceSpec`
and :class:`SearchSpace` only walk the registered knobs in
:data:`~vitsearch.spaces.knobs.base.FIELDS` order.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field, create_model

from vitsearch.spaces import budgets
from vitsearch.spaces.allocate import measure
from vitsearch.spaces.budgets import AllocationSpec, BudgetSpace, PrecisionBudget
from vitsearch.spaces.config import CompressionConfig
from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs.base import FIELDS, REGISTRY
from vitsearch.spaces.knobs.heads import HeadsConfig
from vitsearch.spaces.knobs.subspace import KnobSpace, Section, Target
from vitsearch.spaces.vit.dims import VitDims


_Knobs = create_model(
    "_Knobs", __base__=Section, __module__=__name__,
    **{name: (REGISTRY[name].space_spec, Field(default_factory=REGISTRY[name].space_spec)) for name in FIELDS})


class SpaceSpec(_Knobs):
    """The ``space:`` section of a study file: one sub-space per registered knob, each with its defaults,
    then ``allocation`` (:mod:`.budgets`), written out only when a study sets it."""

    allocation: AllocationSpec = Field(default_factory=AllocationSpec)

    UNWRITTEN = ("allocation",)


class SearchSpace:
    """Static Optuna distributions over the registered knobs, and their mapping to configs.

    Parameter names are the knobs' (``depth.keep``, ``heads.keep``, ``heads.kv``,
    ``tokens.method``, ``tokens.share@<block>``, ``sparsity.attn``, ``sparsity.mlp``,
    ``precision.attn``, ``precision.mlp``), in knob order, then under saliency
    allocation the budgets (``allocation.heads_removed``, ``allocation.mlp_removed``,
    :mod:`.budgets`) in place of ``heads.keep`` and the structured MLP shares, and under
    sensitivity allocation of precision ``allocation.quantised`` in place of
    ``precision.attn`` and ``precision.mlp``. A knob with one choice has no parameter.
    :attr:`parts` holds each knob's resolved sub-space by name; :attr:`budgets` the
    saliency mode's (None in uniform mode), :attr:`mixed` the precision budget (or None).
    """

    def __init__(self, spec: SpaceSpec | dict | None, dims: VitDims, device: str = "cpu",
                 precisions: tuple[str, ...] | None = None, saliency: Any = None,
                 base_precision: str = "fp32", sensitivity: Any = None) -> None:
        self.spec = spec if isinstance(spec, SpaceSpec) else SpaceSpec.model_validate(spec or {})
        self.dims, self.device = dims, str(device)
        # ``precisions``: what the deployment runtime realises (default: eager PyTorch on ``device``);
        # ``base_precision``: what the uncompressed model runs in (the precision knob's choices are relative to it)
        target = Target(self.device, precisions, base_precision)
        knobs, self.budgets = self.spec, None
        if self.spec.allocation.mode == "saliency":
            if saliency is None:
                raise ConfigError("space.allocation.mode: saliency needs the base model's saliency; build the "
                                  "space with SearchSpace.from_spec(spec, model, calibration=...)")
            knobs = budgets.knob_spec(self.spec, dims)
            self.budgets = BudgetSpace(self.spec.allocation, dims, saliency)
        self.mixed: PrecisionBudget | None = None  # ``allocation.precision: sensitivity``
        low = None
        if self.spec.allocation.precision == "sensitivity":
            if sensitivity is None:
                raise ConfigError("space.allocation.precision: sensitivity needs the base model's measured "
                                  "sensitivity; build the space with SearchSpace.from_spec(..., sensitivity=...)")
            knobs, low = budgets.precision_knob_spec(knobs)
        self.parts: dict[str, KnobSpace] = {}
        for name in FIELDS:
            knob = REGISTRY[name]
            part = knob.space(getattr(knobs, name), dims, target, {r: self.parts[r] for r in knob.space.reads})
            part.check()
            self.parts[name] = part
        if low is not None:
            allowed = self.parts["precision"].allowed
            if low not in allowed:
                raise ConfigError(f"space.allocation.precision: {low!r} cannot run on device {self.device!r} in this "
                                  f"runtime; it runs {', '.join(allowed)}")
            self.mixed = PrecisionBudget(self.spec.allocation.quantised, dims, sensitivity, low, base_precision)

    @classmethod
    def from_spec(cls, spec: SpaceSpec | dict | None, model: Any, device: str = "cpu",
                  precisions: tuple[str, ...] | None = None, calibration: Any = None,
                  base_precision: str = "fp32", sensitivity: Any = None) -> "SearchSpace":
        """Build for a timm ViT (reads its depth, heads and token counts).

        Under saliency allocation the saliency of ``model``'s structures is measured on
        ``calibration`` (images or a Dataset of (image, label); None: data-free), once per
        model and calibration (:func:`vitsearch.spaces.allocate.measure`).
        """
        spec = spec if isinstance(spec, SpaceSpec) else SpaceSpec.model_validate(spec or {})
        alloc = spec.allocation
        saliency = measure(model, calibration, device, alloc.group) if alloc.mode == "saliency" else None
        return cls(spec, VitDims.of(model), device, precisions, saliency, base_precision, sensitivity)

    # ---- distributions and mapping ---------------------------------------------------
    def distributions(self) -> dict[str, Any]:
        """Parameter name -> Optuna distribution (static; for samplers and Ray's OptunaSearch)."""
        out: dict[str, Any] = {}
        for part in self.parts.values():
            out.update(part.distributions())
        if self.budgets is not None:
            out.update(self.budgets.distributions())
        if self.mixed is not None:
            out.update(self.mixed.distributions())
        return out

    def suggest(self, trial: Any) -> CompressionConfig:
        """Draw one valid config from an Optuna trial."""
        from optuna.distributions import IntDistribution

        params = {}
        for name, dist in self.distributions().items():
            if isinstance(dist, IntDistribution):
                params[name] = trial.suggest_int(name, dist.low, dist.high)
            else:
                params[name] = trial.suggest_categorical(name, dist.choices)
        return self.config_from_params(params)

    def config_from_params(self, params: dict[str, Any]) -> CompressionConfig:
        """Map parameter values (missing ones take the knob's only choice) to a config."""
        decoded: dict[str, Any] = {}
        for name, part in self.parts.items():
            sub = part.decode(params, {r: decoded[r] for r in part.reads})
            decoded[name] = REGISTRY[name].config_cls.from_dict(sub)
        config = CompressionConfig(**decoded)
        config = config if self.budgets is None else self.budgets.apply(params, config)
        return config if self.mixed is None else self.mixed.apply(params, config)

    def params_for(self, config: CompressionConfig) -> dict[str, Any]:
        """Parameters that map to ``config`` (for ``study.enqueue_trial``); ConfigError if outside the space."""
        dists = self.distributions()
        for knobs, params in self._encodings(config):
            for name, part in self.parts.items():
                params.update(part.encode(getattr(knobs, name)))
            params = {k: v for k, v in params.items() if k in dists}
            inside = all(d.low <= params[k] <= d.high if hasattr(d, "low") else params[k] in d.choices
                         for k, d in dists.items())
            if inside and self.config_from_params(params) == config:
                return params
        raise ConfigError(f"config {config.summary()!r} is not inside this search space")

    def _encodings(self, config: CompressionConfig):
        """(the knobs' config, the other parameters) that may give ``config``: under saliency allocation
        one per K/V choice (the knobs saw every head and no width; the budgets set those). Under
        sensitivity allocation the knobs saw the base precision in every part; the budget set the rest."""
        knobs, extra = config, {}
        if self.mixed is not None:
            knobs = replace(config, precision=CompressionConfig.reference(self.mixed.base).precision)
            extra = self.mixed.encode(config)
        if self.budgets is None:
            yield knobs, dict(extra)
            return
        for kv in self.kv_choices:
            heads = HeadsConfig(kv_heads=None if kv >= self.dims.num_heads else kv)
            yield (replace(knobs, heads=heads, sparsity=replace(knobs.sparsity, mlp_keep=None)),
                   {**self.budgets.encode(config), **extra})

    # ---- size and presets ----------------------------------------------------------
    def size(self) -> int:
        """Number of distinct configs the space can produce."""
        read = {r for part in self.parts.values() for r in part.reads}
        names = list(self.parts)
        if self.budgets is not None:  # the budgets read the kept blocks and the K/V choice
            read.add("depth")
            names.remove("heads")
        if self.mixed is not None:  # the precision budget reads the kept blocks
            read.add("depth")

        def count(i: int, earlier: dict[str, Any]) -> int:
            # knobs another knob reads are walked choice by choice; the others multiply
            if i == len(names):
                keep = earlier["depth"].keep if "depth" in earlier else None
                return ((1 if self.budgets is None else self._allocations(keep))
                        * (1 if self.mixed is None else self.mixed.count(keep)))
            name, part = names[i], self.parts[names[i]]
            if name in read:
                return sum(count(i + 1, {**earlier, name: sub}) for sub in part.outcomes())
            return part.count({r: earlier[r] for r in part.reads}) * count(i + 1, earlier)

        return count(0, {})

    def _allocations(self, depth_keep: int | None) -> int:
        """Distinct per-block (heads, widths) the budgets and K/V choices give for one depth."""
        heads = self.parts["heads"]
        kvs = {HeadsConfig.from_dict(heads.decode({"heads.kv": c}, {})).kv_heads for c in self.kv_choices}
        return len(set().union(*(self.budgets.outcomes(depth_keep, kv) for kv in kvs)))

    def presets(self) -> list[CompressionConfig]:
        """The least-compressed config (the identity when the space holds it) and a few strong ones."""
        return [self.config_from_params(p) for p in self.preset_params()]

    def preset_params(self) -> list[dict[str, Any]]:
        """Parameters of :meth:`presets`, deduplicated, ready for ``study.enqueue_trial``.

        The least compressing choice of every knob; each knob's own preset alone (in the
        knobs' ``preset_rank`` order); every knob's strong choice at once.
        """
        dists = self.distributions()
        presets = {name: part.presets() for name, part in self.parts.items()}
        if self.budgets is not None:
            presets["allocation"] = self.budgets.presets()
        if self.mixed is not None:
            presets["allocation.precision"] = self.mixed.presets()
        base = {k: v for p in presets.values() for k, v in p.least.items()}
        ranked = sorted((REGISTRY[n].preset_rank, n) for n, p in presets.items()
                        if p.alone and REGISTRY[n].preset_rank is not None)
        strong = {k: v for p in presets.values() for k, v in (p.alone if p.strong is None else p.strong).items()}
        variants = [base, *({**base, **presets[n].alone} for _, n in ranked), {**base, **strong}]
        out, seen = [], set()
        for v in variants:
            params = {k: val for k, val in v.items() if k in dists and val is not None}
            key = self.config_from_params(params)
            if key not in seen:
                seen.add(key)
                out.append(params)
        return out

    # ---- the knobs' resolved choices by name ---------------------------------------------
    # The component profile (evaluators/latency/profile/components.py) plans one measurement
    # per head pair and token schedule of the space and reads them under these names.
    @property
    def precisions(self) -> dict[str, list[str]]:
        """Each part's precisions as the space resolved them: the base in place of fp32 where the study left
        the default, and the sensitivity budget's quantised precision."""
        spec = self.parts["precision"].spec
        extra = [self.mixed.low] if self.mixed is not None else []
        return {p: list(dict.fromkeys([*getattr(spec, p), *extra])) for p in ("attn", "mlp")}

    @property
    def keep_range(self) -> tuple[int, int]:
        """The depth knob's kept-block range."""
        return self.parts["depth"].keep_range

    @property
    def head_keep(self) -> list[int]:
        """The heads knob's kept-head choices; under saliency allocation, anchors over the counts a
        block can keep (one, half, all), between which the component predictor interpolates."""
        if self.budgets is not None:
            return sorted({1, max(1, self.dims.num_heads // 2), self.dims.num_heads})
        return self.parts["heads"].head_keep

    @property
    def kv_choices(self) -> list[int]:
        """The heads knob's K/V head choices."""
        return self.parts["heads"].kv_choices

    @property
    def token_blocks(self) -> list[int]:
        """The tokens knob's blocks."""
        return self.parts["tokens"].token_blocks

    @property
    def shares(self) -> list[float]:
        """The tokens knob's shares, largest first."""
        return self.parts["tokens"].shares

    def _kv_for(self, heads: int, choice: int) -> int:
        return self.parts["heads"].kv_for(heads, choice)
