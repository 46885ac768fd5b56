"""The runtime contract: a small ABC, the deployed-candidate record and the registry.

A *runtime* turns a prepared (float, structure-compressed) candidate plus its config
into something that runs the way a user would deploy it: eager PyTorch, a
``torch.compile`` program, an ONNX Runtime session or a TensorRT engine. It realises
each knob for real or refuses it (:mod:`.support` says which, and why); what it builds
is a :class:`Deployed`: a callable taking fp32 images on the device and returning fp32
logits, plus how long the build took (export / compile time is paid once per candidate
and is *not* latency) and the runtime's version.

Implementations must be picklable by name (a Ray worker looks a runtime up with
:func:`get_runtime`), import their package lazily, and never change the prepared model
they are given.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vitsearch.spaces.errors import ConfigError, DeviceError, VitsearchError

if TYPE_CHECKING:
    from vitsearch.evaluators.fakequant import FakeQuantScheme


class NumericsMismatch(VitsearchError):
    """A candidate's outputs in a runtime differ from its eager outputs beyond the tolerance."""


@dataclass
class Deployed:
    """One candidate built for one runtime.

    ``fn(x)``: fp32 images (B, C, H, W) on ``device`` -> fp32 logits on ``device``.
    ``batch``: the batch size the program was built for (``None``: any batch; a static
    program is run on other batches in chunks of ``batch``, the last one padded).
    ``realised``: for each knob part that the runtime changed, how (e.g. "int8: ORT
    quantize_dynamic, 16 MatMulInteger nodes"). ``artifact``: the built program's bytes
    where there is one (ONNX model, TensorRT engine), for export; ``extra``: further
    JSON-able facts (export seconds, opset).
    """

    runtime: str
    version: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    device: str
    batch: int | None
    build_seconds: float
    realised: dict[str, str] = field(default_factory=dict)
    provider: str | None = None
    artifact: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None  # the torch module behind ``fn``, where there is one (eager, compile)
    direct: bool = False  # ``fn`` is ``module`` itself (under inference mode): time and score the module directly

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` (any batch size; see :attr:`batch`)."""
        if self.batch is None or x.shape[0] == self.batch:
            return self.fn(x)
        outs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            n = chunk.shape[0]
            if n < self.batch:  # samples are independent in a ViT: padding cannot change the others
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            outs.append(self.fn(chunk.contiguous())[:n])
        return torch.cat(outs)

    def as_module(self) -> nn.Module:
        """An ``nn.Module`` running the program, for code that takes modules (timing, accuracy).

        The torch module itself where ``fn`` only calls it (:attr:`direct`: eager), so that a
        timing carries no wrapper (about 40 us a call on a 2-core VM); else a wrapper around
        :meth:`__call__`.
        """
        if self.direct and self.module is not None:
            return self.module
        return RuntimeModule(self)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description: runtime, version, provider, build time, what each knob became."""
        return {"runtime": self.runtime, "runtime_version": self.version, "provider": self.provider,
                "build_seconds": round(self.build_seconds, 3), "static_batch": self.batch,
                "realised": dict(self.realised), **self.extra}


class RuntimeModule(nn.Module):
    """A parameter-free module that runs a :class:`Deployed` (so measure/accuracy code can take it)."""

    def __init__(self, deployed: Deployed) -> None:
        super().__init__()
        self.deployed = deployed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the deployed program for ``x``."""
        return self.deployed(x)


def float_structure(config: Any, keep_half: bool = True) -> Any:
    """``config`` with every quantised precision at fp32 (halves too unless ``keep_half``): its float structure.

    What torch prepares and distils before a runtime that quantises itself builds the
    program (``keep_half``), and what a program is checked against (not ``keep_half``).
    A per-block part is mapped entry by entry.
    """
    import dataclasses

    from vitsearch.spaces.knobs.perblock import map_entries
    from vitsearch.spaces.knobs.precision import PrecisionConfig

    keep = ("fp16", "bf16") if keep_half else ()
    p = config.precision
    base = p.base if p.base in keep else "fp32"  # a quantised part's float form is the rest of the model's
    floats = (*keep, "fp32")
    as_float = lambda v: v if v in floats else base  # noqa: E731
    new = PrecisionConfig(attn=map_entries(p.attn, as_float), mlp=map_entries(p.mlp, as_float), base=base)
    return dataclasses.replace(config, precision=new)


class Runtime(ABC):
    """One way of running a candidate. Subclasses set :attr:`name` and implement :meth:`deploy`.

    ``package``/``pip``: the module it imports and the pip name for the install hint
    (None: nothing beyond torch). Contract: :meth:`deploy` never mutates ``prepared``;
    it raises :class:`DeviceError` (one line) when the runtime cannot build the
    candidate, and it realises every knob it does not refuse in :mod:`.support`.

    The hooks the staged evaluation (:mod:`vitsearch.evaluators.pipeline`) and the
    profile ask a runtime, so that neither names one: :meth:`structure` (what torch
    prepares and distils), :meth:`fake_quant_scheme` (how it quantises the linears, for
    distillation that sees it), :attr:`is_reference` (its program is the eager model every
    other runtime is checked against, so it is not checked itself), :meth:`identity_fields`
    (what the runtime adds to a device fingerprint) and :attr:`times_components`
    (whether timings of torch components predict it).
    """

    name: ClassVar[str]
    package: ClassVar[str | None] = None
    pip: ClassVar[str | None] = None
    cuda_only: ClassVar[bool] = False
    #: a sum of torch components timed one by one predicts this runtime's programs (eager);
    #: a runtime that fuses or quantises across them is profiled by whole models only
    times_components: ClassVar[bool] = False
    #: its program is the candidate's eager model itself: the reference other runtimes are checked against
    is_reference: ClassVar[bool] = False

    def structure(self, config: Any) -> Any:
        """The config torch prepares and distils for this runtime: the float structure (the runtime quantises)."""
        return float_structure(config, keep_half=True)

    def fake_quant_scheme(self, config: Any, batch: int) -> FakeQuantScheme | None:
        """How this runtime quantises ``config``'s linears in a program built for ``batch`` images, to train through.

        None: it quantises none of them, or its scheme is not modelled (distillation then
        sees the float model; TensorRT refuses integer precisions anyway).
        """
        return None

    def identity_fields(self) -> dict[str, str]:
        """Fields this runtime adds to a device fingerprint (its name and version: another runtime's profile differs)."""
        return {"runtime": self.name, "runtime_version": self.version()}

    def version(self) -> str:
        """The runtime's version string (its package's ``__version__``, else torch's)."""
        if self.package is None:
            return torch.__version__
        return str(getattr(importlib.import_module(self.package), "__version__", "unknown"))

    def unavailable(self, device: torch.device) -> str | None:
        """Why this runtime cannot run on ``device`` here (no CUDA, package missing), or None."""
        if self.cuda_only and device.type != "cuda":
            return f"it runs on CUDA GPUs only, and the device is {device}; use onnxruntime or compile on CPU"
        if self.package is not None:
            try:
                importlib.import_module(self.package)
            except ImportError as exc:
                return (f"its package is not installed ({type(exc).__name__}: {str(exc)[:120]}); "
                        f"install it with `pip install {self.pip}`")
        return None

    def changes_numerics(self, config: Any) -> bool:
        """Whether this runtime computes the candidate differently from eager beyond float rounding.

        True where the runtime's own quantisation replaces torchao's (accuracy is then
        measured in the runtime).
        """
        return False

    @abstractmethod
    def deploy(self, prepared: nn.Module, config: Any, example: torch.Tensor, threads: int | None) -> Deployed:
        """Build ``prepared`` (from ``vitsearch.spaces.prepare``) with ``config``'s deploy-time knobs.

        ``example``: an fp32 input of the shape to build for, on the target device.
        ``threads``: CPU threads the program may use (None: the runtime's default).
        """


RUNTIMES: dict[str, type[Runtime]] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a runtime known under its :attr:`Runtime.name`."""
    RUNTIMES[cls.name] = cls
    return cls


def runtime_names() -> tuple[str, ...]:
    """Every registered runtime name (the accepted values of ``latency.runtime``)."""
    return tuple(RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name``; ConfigError naming the accepted ones otherwise."""
    if name not in RUNTIMES:
        raise ConfigError(f"latency.runtime: {name!r} is not a runtime; expected one of {', '.join(RUNTIMES)}")
    return RUNTIMES[name]()


def check_runtime(name: str, device: torch.device | str) -> Runtime:
    """The runtime, after checking it can run on ``device`` here: one-line ConfigError/DeviceError if not."""
    runtime = get_runtime(name)
    dev = torch.device(device)
    why = runtime.unavailable(dev)
    if why is not None:
        err = DeviceError if runtime.cuda_only and dev.type != "cuda" else ConfigError
        raise err(f"latency.runtime: {name!r} cannot be used: {why}")
    return runtime
