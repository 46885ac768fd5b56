"""An exported deployment variant: write it, and load it back.

A variant dir holds ``config.json`` (the CompressionConfig), ``weights.pt`` (the state
dict of the *prepared* float model, i.e. after depth/heads/sparsity/tokens and any
distillation, before precision), ``study.yaml`` (to rebuild the base model),
``provenance.json`` and, where ``torch.export`` works, ``program.pt2``.

Why the float state and not the quantized one: torchao's int8 tensors are tensor
subclasses whose classes ``torch.load(weights_only=True)`` refuses unless each one is
registered with ``add_safe_globals``, and those classes change between torchao releases.
The float state loads with plain ``weights_only=True`` and :func:`load_variant`
re-applies precision with the same deterministic ``finalize`` the search used, so the
rebuilt model is the one that was evaluated (the file is the fp32 size; the deployed
size is in the provenance).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.spaces.errors import ConfigError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
PROVENANCE_FILE = "provenance.json"
STUDY_FILE = "study.yaml"
#: what can choose the polish's checkpoint and whether it is kept (``pick --polish-select``; the default and why:
#: :data:`vitsearch.search.results.export.POLISH_SELECT`), in the words a record's readers print
POLISH_SELECTS = {"top1": "val top-1", "teacher": "val KL divergence from the teacher"}
PROGRAM_FILE = "program.pt2"
README_FILE = "README.md"


@dataclass
class Variant:
    """A loaded variant: the compressed model (eval mode), its config, provenance and study."""

    model: Any
    config: Any
    provenance: dict[str, Any]
    spec: Any
    #: the exported runtime program (ONNX Runtime session, AOTInductor package, TensorRT engine) as a
    #: callable, images -> fp32 logits; None for an eager study or where the export failed
    runtime_model: Any = None


def load_variant(path: str | Path, device: str = "cpu") -> Variant:
    """Rebuild the compressed model from the base model + ``config.json`` + ``weights.pt``.

    ``device``: where to build it ("cpu" or "cuda[:N]"); precision is applied for that
    device, so a variant with a precision the device cannot run raises DeviceError.
    A variant picked from a non-eager study also carries its runtime program:
    ``Variant.runtime_model`` runs it (images -> fp32 logits).
    """
    import torch

    from vitsearch.evaluators.models import ModelSpec, load_base_model
    from vitsearch.search.study import load_study
    from vitsearch.evaluators.runtimes.base import float_structure
    from vitsearch.evaluators.runtimes.eager import eager_realises
    from vitsearch.spaces import CompressionConfig, finalize, prepare

    path = Path(path)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, STUDY_FILE, PROVENANCE_FILE) if not (path / f).is_file()]
    if missing:
        raise ConfigError(f"variant: {str(path)!r} lacks {', '.join(missing)}; give a directory written by "
                          "`vitsearch pick`")
    config = CompressionConfig.from_json((path / CONFIG_FILE).read_text())
    spec = load_study(path / STUDY_FILE)
    m = spec.model
    base = load_base_model(ModelSpec(m.name, m.pretrained, m.checkpoint, m.num_classes))
    # Shapes depend only on the config; the loaded state overrides every weight and mask,
    # so the data-free rankings used here to build the structure do not matter. A
    # runtime may realise a precision eager cannot (int4 on CPU): then the float structure.
    eager_config = config if eager_realises(config, device) else float_structure(config)
    prepared = prepare(base, eager_config, calibration=None, device=device)
    state = torch.load(path / WEIGHTS_FILE, map_location=device, weights_only=True)
    try:
        prepared.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"variant: {WEIGHTS_FILE} does not fit {CONFIG_FILE} on {m.name} "
                          f"({str(exc).splitlines()[0][:200]}); re-export with `vitsearch pick`") from None
    provenance = json.loads((path / PROVENANCE_FILE).read_text())
    prepared.vitsearch_info = provenance.get("compression") or prepared.vitsearch_info
    ex = provenance.get("export") or {}
    runtime_model = None
    if ex.get("runtime") and ex.get("exported"):
        from vitsearch.search.results.runtime_export import load_runtime_model

        runtime_model = load_runtime_model(ex["runtime"], path / ex["file"], device, spec.latency.threads,
                                           ex["input_shape"][0])
    model = finalize(prepared, eager_config, device=device)
    return Variant(model.eval(), config, provenance, spec, runtime_model)


def export_program(model, example, path: Path) -> dict[str, Any]:
    """``torch.export`` the model to ``path``; returns a note saying whether and why (not)."""
    import torch

    try:
        program = torch.export.export(model, (example,))
        torch.export.save(program, path)
        loaded = torch.export.load(path).module()
        with torch.inference_mode():
            diff = float((loaded(example).float() - model(example).float()).abs().max())
    except Exception as exc:  # what the exporter refuses varies by layer and torch version
        path.unlink(missing_ok=True)
        return {"exported": False, "reason": f"torch.export failed: {type(exc).__name__}: "
                                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"}
    return {"exported": True, "file": PROGRAM_FILE, "torch_version": torch.__version__,
            "input_shape": list(example.shape), "max_abs_diff_vs_eager": diff}


def write_variant(out: Path, prepared, config, study_file: Path, provenance: dict[str, Any],
                  program_of=None) -> Path:
    """Write a variant dir atomically (temp dir + rename); an older variant at ``out`` is replaced.

    ``program_of(path) -> note``, when given, writes the torch.export program.
    """
    import torch

    if out.exists() and any(out.iterdir()) and not (out / PROVENANCE_FILE).is_file():
        raise ConfigError(f"--out: {str(out)!r} exists and is not a vitsearch variant dir; choose another --out")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_FILE).write_text(config.to_json(indent=2))
    torch.save({k: v.detach().cpu().contiguous() for k, v in prepared.state_dict().items()}, tmp / WEIGHTS_FILE)
    shutil.copyfile(study_file, tmp / STUDY_FILE)
    if program_of is not None:
        provenance["export"] = program_of(tmp / PROGRAM_FILE)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str))
    (tmp / README_FILE).write_text(readme(provenance))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def readme(p: dict[str, Any]) -> str:
    """A short human description of the variant dir."""
    ex = p.get("export") or {}
    lat = p["latency"]
    if ex.get("runtime"):
        export_line = (f"`{ex['file']}`: the {ex['runtime']} {ex.get('runtime_version')} program the search ran "
                       f"(input {ex.get('input_shape')}); `load_variant(DIR).runtime_model` runs it"
                       if ex.get("exported") else f"no {ex['runtime']} file: {ex.get('reason')}")
    else:
        export_line = (f"`{PROGRAM_FILE}`: torch.export program (torch {ex.get('torch_version')}, input "
                       f"{ex.get('input_shape')}); load with `torch.export.load(path).module()`"
                       if ex.get("exported") else f"no `{PROGRAM_FILE}`: {ex.get('reason', 'export not attempted')}")
    return "\n".join([
        f"# vitsearch variant: trial {p['trial']} of study `{p['study']}`", "",
        f"- config: {p['config_summary']}",
        f"- base model: {p['base_model']}",
        f"- accuracy: {p['accuracy']['recorded']:.2%} recorded ({p['accuracy']['source']}); "
        f"{p['accuracy']['at_export']:.2%} re-evaluated at export" + _test_line(p["accuracy"]),
        f"- latency: {lat['used_ms']:.3f} ms ({lat['used_source']}"
        + (f"; interval high end {lat['used_high_ms']:.3f} ms, {lat['used_within']})" if lat.get("used_high_ms")
           is not None and lat.get("used_confidence") is not None else ", no interval recorded)"),
        f"- size: {p['size_mb']:.3f} MB deployed (weights.pt holds the fp32 prepared state)", "",
        "Load: `from vitsearch.search import load_variant; v = load_variant(DIR); v.model(images)`", "",
        f"- `{CONFIG_FILE}`: CompressionConfig; `{WEIGHTS_FILE}`: state dict of the prepared float model "
        "(`torch.load(weights_only=True)`), precision is re-applied on load",
        f"- {export_line}", ""])


def polish_criterion(polish: dict[str, Any]) -> str:
    """What chose a recorded polish's checkpoint and whether it was kept, in words (``val top-1`` for records
    written before there was a choice)."""
    return POLISH_SELECTS.get(polish.get("select") or "top1", "val top-1")


def _test_line(acc: dict[str, Any]) -> str:
    """The held-out test accuracy (and the polish) of a variant, when recorded."""
    test, polish = acc.get("test"), acc.get("polish") or {}
    if not test:
        return ""
    line = (f"; test {test['test_accuracy']:.2%} (95 % interval {test['test_lo']:.1%}-{test['test_hi']:.1%}, "
            f"{test['test_n']} held-out images)")
    if "val_accuracy" in polish:
        kept = "kept" if polish["kept"] else f"not kept: no better by {polish_criterion(polish)}"
        line += (f"; polished {polish['steps']} more steps: val {polish['val_accuracy']:.2%}, test "
                 f"{polish['test_accuracy']:.2%} ({kept})")
    elif "best_step" in polish:
        line += f"; polished {polish['steps']} more steps, not kept: {polish['note']}"
    return line
