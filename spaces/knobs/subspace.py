"""A knob's part of a search space: the study file's sub-space model and its resolved choices.

Each knob module declares a pydantic model for its part of a study's ``space:`` section
(strict, extra keys refused) and a :class:`KnobSpace` that resolves it against the base
model's dimensions and the target: which Optuna parameters the knob contributes, how a
trial's values decode into the knob's sub-config, and back. ``SearchSpace`` builds one
per knob in :data:`~.base.FIELDS` order and only ever loops over them.

Distributions are static (the same names and choices on every trial) because NSGA-II
and TPE handle dynamic spaces badly; a rule that ties one knob to another (token blocks
must exist after depth dropping) is the later knob's: it names the knobs it reads in
:attr:`KnobSpace.reads`, sees their resolved sub-spaces when built and their decoded
sub-configs when decoding, so every config that comes out is valid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Strict, model_serializer

from vitsearch.spaces.knobs.base import PARTS
from vitsearch.spaces.vit.dims import VitDims

#: YAML's true is not 1 here, nor 2.0 a count: a typo must not pass as a number
Int = Annotated[int, Strict()]

STRICT = ConfigDict(extra="forbid", frozen=True)


class Section(BaseModel):
    """A strict section of a study file whose settings added after runs were made (``UNWRITTEN``) are left out of
    a dump while they hold their default (the value that reproduces those runs), so that such a study dumps as
    before they existed: run dirs and shared studies compare dumps."""

    model_config = STRICT
    UNWRITTEN: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _unwritten_left_out(self, handler):
        data = handler(self)
        for name in self.UNWRITTEN:
            if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                data.pop(name, None)
        return data


@dataclass(frozen=True)
class Target:
    """Where the searched models run: the device, the precisions its runtime realises
    (None: what eager PyTorch runs on ``device``), and the precision the uncompressed
    model is deployed in there (``model.precision``, resolved)."""

    device: str
    precisions: tuple[str, ...] | None = None
    base_precision: str = "fp32"


@dataclass(frozen=True)
class Presets:
    """A knob's parameters in the preset configs.

    ``least``: its least-compressing choice (every preset starts from all knobs' ``least``);
    ``alone``: a typical compressing choice, tried with the other knobs at ``least``
    ({}: no such preset); ``strong``: its part of the one preset compressing every knob
    (None: ``alone``).
    """

    least: dict[str, Any]
    alone: dict[str, Any] = field(default_factory=dict)
    strong: dict[str, Any] | None = None


class KnobSpace(ABC):
    """One knob's sub-space resolved against a model (picklable: a SearchSpace travels to Ray workers).

    Built with the knob's sub-space model (``spec``), the base model's ``dims``, the
    ``target`` and the sub-spaces of the knobs before it (``earlier``, by name).
    Contract: :meth:`distributions` is static; :meth:`decode` maps any values inside
    them (a missing parameter takes the knob's first choice) to a valid sub-config JSON;
    :meth:`encode` inverts it on the sub-configs it produces; :meth:`count` is the number
    of distinct sub-configs :meth:`decode` can give.
    """

    #: knobs earlier in FIELDS whose sub-spaces this one is built from, and whose decoded
    #: sub-configs :meth:`decode` and :meth:`count` read (their ``earlier`` argument)
    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Any, dims: VitDims, target: Target, earlier: dict[str, "KnobSpace"]) -> None:
        self.spec, self.dims, self.target = spec, dims, target

    def check(self) -> None:
        """ConfigError (one line, naming the ``space.`` field) when the sub-space does not fit the model or target."""

    @abstractmethod
    def distributions(self) -> dict[str, Any]:
        """Parameter name -> Optuna distribution; a choice with one value has no parameter."""

    @abstractmethod
    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """The sub-config JSON of parameter values (``earlier``: the decoded sub-configs of :attr:`reads`)."""

    @abstractmethod
    def encode(self, config: Any) -> dict[str, Any]:
        """Parameter values that decode to the sub-config ``config`` (all parameters, one-valued ones too)."""

    @abstractmethod
    def count(self, earlier: dict[str, Any]) -> int:
        """Distinct sub-configs :meth:`decode` gives, given the decoded sub-configs of :attr:`reads`."""

    def outcomes(self) -> list[Any]:
        """Every distinct sub-config :meth:`decode` gives: needed of a knob that a later knob reads."""
        raise NotImplementedError(f"{type(self).__name__} is read by another knob but lists no outcomes")

    @abstractmethod
    def presets(self) -> Presets:
        """The knob's parameters in the preset configs."""


def categorical(choices: dict[str, list]) -> dict[str, Any]:
    """Optuna categorical distributions of the parameters with more than one choice."""
    from optuna.distributions import CategoricalDistribution

    return {k: CategoricalDistribution(list(v)) for k, v in choices.items() if len(v) > 1}


def pick(values: list, prefer: tuple) -> Any:
    """The first of ``prefer`` among ``values``, else the first value."""
    return next((p for p in prefer if p in values), values[0])


def check_choices(where: str, values: list[str], check) -> list[str]:
    """``values`` without repeats, each passed to ``check(where, value)`` (which raises ConfigError)."""
    for v in values:
        check(where, v)
    return list(dict.fromkeys(values))


class PartsSpace(KnobSpace):
    """A per-part knob's sub-space: one categorical parameter ``<knob>.<part>`` per part.

    The subclass names the knob (``KNOB``), the choices it prefers in the least
    compressing preset (``LEAST``) and in its own preset (``ALONE``; empty: none).
    """

    KNOB: ClassVar[str]
    LEAST: ClassVar[tuple[str, ...]]
    ALONE: ClassVar[tuple[str, ...]] = ()

    def choices(self) -> dict[str, list[str]]:
        """Parameter name -> every choice, one-valued ones too."""
        return {f"{self.KNOB}.{p}": list(getattr(self.spec, p)) for p in PARTS}

    def distributions(self) -> dict[str, Any]:
        """One categorical distribution per part with more than one choice."""
        return categorical(self.choices())

    def decode(self, params: dict[str, Any], earlier: dict[str, Any]) -> dict:
        """The chosen value per part (the first choice when not a parameter)."""
        return {p: params.get(f"{self.KNOB}.{p}", getattr(self.spec, p)[0]) for p in PARTS}

    def encode(self, config: Any) -> dict[str, Any]:
        """The config's value per part."""
        return {f"{self.KNOB}.{p}": getattr(config, p) for p in PARTS}

    def count(self, earlier: dict[str, Any]) -> int:
        """Product of the choices per part."""
        out = 1
        for p in PARTS:
            out *= len(getattr(self.spec, p))
        return out

    def presets(self) -> Presets:
        """``LEAST`` in every part; ``ALONE`` in every part when the knob has its own preset."""
        least = {k: pick(v, self.LEAST) for k, v in self.choices().items()}
        alone = {k: pick(v, self.ALONE) for k, v in self.choices().items()} if self.ALONE else {}
        return Presets(least, alone)
