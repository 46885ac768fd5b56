"""Which knob is real in which runtime, on which device kind, and why not where it is not.

One table (:data:`PRECISION`, :data:`SPARSITY`; the structural knobs — depth, heads,
tokens, structured MLP widths — change the graph itself and are real in every runtime)
drives everything: refusing a config (:func:`check_config`), trimming a study's search
space (:func:`runtime_space`: choices left at their defaults that a runtime cannot
realise are left out and reported; choices the study names explicitly are an error),
and the table in docs/runtimes.md (:func:`knob_table`).
"""

from __future__ import annotations

from typing import Any, Callable

from vitsearch.spaces.errors import ConfigError
from vitsearch.spaces.knobs import perblock
from vitsearch.spaces.knobs.base import PARTS
from vitsearch.spaces.knobs.precision import PRECISIONS

# The table names the precision knob rather than looping over the registry: precision is
# the one knob a runtime can refuse (it names the numeric kernels the runtime must have);
# the structural knobs change the graph itself and sparsity falls back to masked dense
# weights, so every runtime realises them.
#: (runtime, device kind) -> precision -> how it is realised, or "refused: why".
_TORCHAO_INT4 = "refused: torchao's int4 kernels need the mslk package, absent here"
PRECISION: dict[tuple[str, str], dict[str, str]] = {
    ("eager", "cpu"): {"fp32": "fp32", "fp16": "torch fp16 casts", "bf16": "torch bf16 casts",
                       "int8": "torchao int8 dynamic activation + int8 weight",
                       "int8-weight": "torchao int8 weight-only", "int4-weight": _TORCHAO_INT4},
    ("eager", "cuda"): {"fp32": "fp32", "fp16": "torch fp16", "bf16": "torch bf16",
                        "int8": "torchao int8 dynamic", "int8-weight": "torchao int8 weight-only",
                        "int4-weight": "torchao int4 weight-only (tinygemm)"},
    ("compile", "cpu"): {"fp32": "inductor fp32", "fp16": "inductor, fp16 casts", "bf16": "inductor, bf16 casts",
                         "int8": "torchao int8 dynamic, compiled", "int8-weight": "torchao int8 weight-only, compiled",
                         "int4-weight": _TORCHAO_INT4},
    ("compile", "cuda"): {"fp32": "inductor fp32 (CUDA graphs)", "fp16": "inductor fp16", "bf16": "inductor bf16",
                          "int8": "torchao int8 dynamic, compiled", "int8-weight": "torchao int8 weight-only, compiled",
                          "int4-weight": "torchao int4 weight-only, compiled"},
    ("onnxruntime", "cpu"): {
        "fp32": "ONNX fp32",
        "fp16": "refused: ONNX Runtime's CPU provider has no fp16 matmul kernels (it casts back to fp32)",
        "bf16": "refused: ONNX Runtime's CPU provider has no bf16 kernels",
        "int8": "ORT quantize_dynamic: DynamicQuantizeLinear + MatMulInteger (int8 weights, per-tensor)",
        "int8-weight": "ORT MatMulNBits, 8-bit weights (block 32, symmetric)",
        "int4-weight": "ORT MatMulNBits, 4-bit weights (block 32, symmetric)"},
    ("onnxruntime", "cuda"): {
        "fp32": "ONNX fp32, CUDA provider", "fp16": "fp16 graph (exported from the torch fp16 casts), CUDA provider",
        "bf16": "refused: ONNX Runtime's CUDA provider lacks bf16 kernels for several ViT ops",
        "int8": "refused: ORT's dynamic int8 ops run on the CPU provider, not CUDA; use runtime tensorrt or eager",
        "int8-weight": "refused: ORT's CUDA MatMulNBits is 4-bit only",
        "int4-weight": "ORT MatMulNBits, 4-bit weights, CUDA provider"},
    ("tensorrt", "cuda"): {
        "fp32": "TensorRT fp32 (TF32 off)", "fp16": "TensorRT fp16 (strongly typed graph from the torch casts)",
        "bf16": "TensorRT bf16 (strongly typed graph from the torch casts)",
        "int8": "refused: TensorRT int8 needs a calibrated QDQ graph, not implemented here; use eager or compile",
        "int8-weight": "refused: TensorRT weight-only int8 needs a QDQ graph, not implemented here",
        "int4-weight": "refused: TensorRT int4 needs a QDQ graph, not implemented here"},
}
#: (runtime, device kind) -> sparsity kind -> how it is realised (no runtime refuses one).
_MASKED = "masked dense weights (correct, no sparse kernel: no speed-up)"
SPARSITY: dict[tuple[str, str], dict[str, str]] = {
    ("eager", "cpu"): {"2:4": _MASKED, "unstructured": _MASKED},
    ("eager", "cuda"): {"2:4": "torch.sparse semi-structured kernels with fp16/bf16, else masked dense",
                        "unstructured": _MASKED},
    ("compile", "cpu"): {"2:4": _MASKED, "unstructured": _MASKED},
    ("compile", "cuda"): {"2:4": "semi-structured tensors under torch.compile with fp16/bf16", "unstructured": _MASKED},
    ("onnxruntime", "cpu"): {"2:4": _MASKED, "unstructured": _MASKED},
    ("onnxruntime", "cuda"): {"2:4": _MASKED, "unstructured": _MASKED},
    ("tensorrt", "cuda"): {"2:4": "TensorRT sparse weights (SPARSE_WEIGHTS flag; sparse kernels on sm80+)",
                           "unstructured": _MASKED},
}
STRUCTURAL = "real: the exported / compiled graph is the smaller model"


def _kind(device: Any) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def precision_refusal(runtime: str, device: Any, value: str) -> str | None:
    """Why ``runtime`` cannot realise precision ``value`` on ``device``, or None."""
    how = PRECISION.get((runtime, _kind(device)))
    if how is None:
        return f"runtime {runtime!r} does not run on {_kind(device)}"
    text = how.get(value, "refused: unknown precision")
    return text.removeprefix("refused: ") if text.startswith("refused") else None


def precisions(runtime: str, device: Any) -> tuple[str, ...]:
    """The precisions ``runtime`` realises on ``device``."""
    how = PRECISION.get((runtime, _kind(device)), {})
    return tuple(p for p, text in how.items() if not text.startswith("refused"))


def check_config(runtime: str, device: Any, config: Any) -> None:
    """ConfigError (one line) when ``config`` asks ``runtime`` for a knob it cannot realise.

    Every entry of a per-block precision is checked; the error names it (``precision.mlp[3]``).
    """
    for where, value in config.precision.named_values():
        why = precision_refusal(runtime, device, value)
        if why is not None:
            raise ConfigError(f"{where}: {value!r} cannot run in runtime {runtime!r} on {_kind(device)}: "
                              f"{why}; accepted there: {', '.join(precisions(runtime, device))}")


def describe_precision(config: Any, how: Callable[[str], str | None], base: bool = True) -> dict[str, str]:
    """``{"precision.attn": how(value), ...}`` of the parts (and the ``base``) whose ``how`` is not None.

    A per-block part says what each of its distinct entries becomes and in which blocks
    (``torchao int8 dynamic in blocks 0, 2``).
    """
    fields = (*PARTS, "base") if base else PARTS
    texts = {f"precision.{p}": perblock.describe(getattr(config.precision, p), how) for p in fields}
    return {k: v for k, v in texts.items() if v is not None}


def runtime_space(space: Any, runtime: str, device: Any) -> tuple[Any, list[str]]:
    """The study's ``space`` with the precisions ``runtime`` cannot realise left out, and notes saying so.

    A choice the study lists explicitly is refused with a ConfigError instead (the user
    asked for it). Returns (SpaceSpec, notes); notes are one line per choice left out.
    """
    notes: list[str] = []
    updates: dict[str, list[str]] = {}
    given = space.precision.model_fields_set
    for part in PARTS:
        kept = []
        for value in getattr(space.precision, part):
            why = precision_refusal(runtime, device, value)
            if why is None:
                kept.append(value)
            elif part in given:
                raise ConfigError(f"space.precision.{part}: {value!r} cannot run in runtime {runtime!r} on "
                                  f"{_kind(device)}: {why}; remove it or use one of "
                                  f"{', '.join(precisions(runtime, device))}")
            else:
                notes.append(f"space.precision.{part}: {value!r} left out: runtime {runtime!r} cannot realise it "
                             f"on {_kind(device)} ({why})")
        if not kept:
            kept = ["fp32"]
        updates[part] = kept
    if not notes:
        return space, []
    given_only = type(space.precision).model_construct(  # the parts left at their default stay so
        _fields_set=set(given), **{**dict(space.precision), **updates})
    return space.model_copy(update={"precision": given_only}), notes


def runtime_search_space(space: Any, base: Any, runtime: str, device: Any, calibration: Any = None,
                         base_precision: str = "fp32", sensitivity: Any = None) -> tuple[Any, list[str]]:
    """The SearchSpace of ``space`` (a SpaceSpec) in ``runtime``: refused default choices left out, and the notes.

    ``calibration``: the images a saliency allocation ranks structures on (None: data-free);
    ``base_precision``: what the uncompressed model runs in (``model.precision``, resolved);
    ``sensitivity``: what a sensitivity allocation of precision ranks groups by
    (:func:`vitsearch.evaluators.sensitivity.study_sensitivity`).
    """
    from vitsearch.spaces import SearchSpace

    spec, notes = runtime_space(space, runtime, device)
    return SearchSpace.from_spec(spec, base, device=str(device), precisions=precisions(runtime, device),
                                 calibration=calibration, base_precision=base_precision,
                                 sensitivity=sensitivity), notes


def knob_table() -> str:
    """The knob x runtime table as Markdown (what docs/runtimes.md shows)."""
    cols = list(PRECISION)
    head = "| knob | " + " | ".join(f"{r} ({k})" for r, k in cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 1)]
    for value in PRECISIONS:
        rows.append(f"| precision {value} | " + " | ".join(PRECISION[c][value] for c in cols) + " |")
    for kind in ("2:4", "unstructured"):
        rows.append(f"| sparsity {kind} | " + " | ".join(SPARSITY[c][kind] for c in cols) + " |")
    for knob in ("depth", "heads / GQA", "tokens merge / prune", "MLP structured"):
        rows.append(f"| {knob} | " + " | ".join("real" for _ in cols) + " |")
    return "\n".join(rows)
