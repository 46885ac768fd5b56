"""A picked variant exported for the study's runtime, and loaded back as a callable.

* ``onnxruntime``: ``model.onnx``, the exported graph with ORT's quantisation applied,
  exactly the program the search timed and (where it quantises) scored;
* ``compile``: ``program_aoti.pt2``, an AOTInductor package of the finalized model
  (``torch._inductor.aoti_compile_and_package``), static shape;
* ``tensorrt``: ``model.engine``, the serialized engine (GPU; not exercised here).

Each file is loaded back right after writing and its outputs compared with the
program that was built (``max_abs_diff_vs_built`` in the provenance); the variant is
also re-measured in its runtime then. :func:`load_runtime_model` rebuilds the callable
from the file (fp32 images in, fp32 logits out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

FILES = {"onnxruntime": "model.onnx", "compile": "program_aoti.pt2", "tensorrt": "model.engine"}


def write_runtime_file(deployed, example: torch.Tensor, folder: Path) -> dict[str, Any]:
    """Write ``deployed``'s program into ``folder``, load it back, compare; returns the provenance note."""
    name = deployed.runtime
    path = folder / FILES[name]
    try:
        if name == "compile":
            program = torch.export.export(deployed.module, (example,))
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
        else:
            path.write_bytes(deployed.artifact)
        loaded = load_runtime_model(name, path, example.device, threads=None, batch=int(example.shape[0]))
        with torch.inference_mode():
            diff = float((loaded(example).float().cpu() - deployed(example).float().cpu()).abs().max())
    except Exception as exc:  # what an exporter refuses varies by layer and version: say so, keep the rest
        path.unlink(missing_ok=True)
        text = str(exc).strip()
        return {"runtime": name, "exported": False,
                "reason": f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"}
    return {"runtime": name, "runtime_version": deployed.version, "exported": True, "file": path.name,
            "input_shape": list(example.shape), "realised": dict(deployed.realised),
            "max_abs_diff_vs_built": diff}


def load_runtime_model(runtime: str, path: Path, device: torch.device | str = "cpu", threads: int | None = None,
                       batch: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The runtime program stored at ``path`` as a callable (images -> fp32 logits)."""
    from vitsearch.evaluators.runtimes import Deployed

    dev = torch.device(device)
    if runtime == "onnxruntime":
        from vitsearch.evaluators.runtimes.onnxrt import make_session, runner

        session = make_session(str(path), dev, threads)
        fn = runner(session, dev, batch or 1)
    elif runtime == "compile":
        fn = torch._inductor.aoti_load_package(str(path))
    else:
        from vitsearch.evaluators.runtimes.tensorrt import engine_runner

        fn = engine_runner(path.read_bytes(), torch.zeros(batch or 1, 1, device=dev))
    return Deployed(runtime, "", lambda x: fn(x).float(), str(dev), batch, 0.0)
