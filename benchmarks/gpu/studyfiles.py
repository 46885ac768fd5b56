"""Study files for parts 3 and 4 of the GPU check, written into the work folder.

Part 3 profiles a timm architecture with random weights; a study needs data, so a small
ImageFolder of random images (two classes) is written beside it: the profile times
models, it never scores them. Part 4 searches the built-in model on its shipped MNIST-5k
data with real accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def _base_precision(device: str) -> str:
    """The study's ``model.precision``: bf16 on CUDA (what a GPU user deploys; auto says the same), fp32 on CPU."""
    return "bf16" if device.startswith("cuda") else "fp32"


def _plan(smoke: bool, seconds: float) -> dict[str, Any]:
    """The study's interleave section: the fewest pairs in a smoke run, else up to ``seconds`` per measurement."""
    return ({"chunk": 2, "min_pairs": 4, "max_pairs": 8, "max_seconds": 0.3} if smoke
            else {"max_seconds": seconds, "min_pairs": 6})


def random_imagefolder(root: Path, size: int, per_class: int = 4) -> Path:
    """``root/train`` and ``root/val`` with two class folders of random RGB images of ``size`` pixels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def profile_study(opts: dict, work: Path) -> Path:
    """Part 3's study: ``opts['arch']`` at ``opts['batch']`` on the device, bf16-based precision choices."""
    smoke = opts["smoke"]
    latency: dict[str, Any] = {"batch_size": opts["batch"], "predictor": "off", "interleave": _plan(smoke, 1.5)}
    data: dict[str, Any] = {"source": "mnist5k", "calibration_size": 16}
    if opts["arch"].startswith("timm:"):
        data = {"source": "imagefolder", "path": str(random_imagefolder(work / "images", 224)),
                "calibration_size": 4, "eval_batch_size": 4}
        latency["input_size"] = [3, 224, 224]
    cuda = opts["device"].startswith("cuda")
    halves = ["bf16", "int8"] + (["fp16"] if cuda else [])
    space: dict[str, Any] = {"precision": {"attn": halves, "mlp": halves}}
    if smoke:  # few components and whole models: the CPU test runs it in seconds
        space = {"precision": {"attn": ["fp32"], "mlp": ["fp32", "int8"]},
                 "sparsity": {"attn": ["dense"], "mlp": ["dense", "structured:0.5"]},
                 "heads": {"keep": [6], "kv_heads": [3, 6]}, "depth": {"keep_min": 6},
                 "tokens": {"shares": [1.0, 0.6], "blocks": [2]}}
    study = {"name": "gpu_profile", "model": {"name": opts["arch"], "pretrained": False,
                                              "precision": _base_precision(opts["device"])}, "data": data,
             "device": opts["device"], "latency": latency, "space": space, "search": {"workers": 1}}
    return _write(work / "profile_study.yaml", study)


def search_study(opts: dict, work: Path) -> Path:
    """Part 4's study: the built-in model with its shipped weights and data, searched on the device."""
    smoke = opts["smoke"]
    latency: dict[str, Any] = {"batch_size": opts["batch"], "predictor": "off", "interleave": _plan(smoke, 1.0)}
    cuda = opts["device"].startswith("cuda")
    study = {"name": "gpu_search", "model": {"name": "builtin:vitsearch-tiny", "precision": _base_precision(opts["device"])},
             "data": {"source": "mnist5k", "seed": 0}, "device": opts["device"], "latency": latency,
             "constraints": {"max_accuracy_drop": 0.05},
             "space": {"precision": {"attn": ["bf16", "fp16", "int8"] if cuda else ["fp32", "bf16"],
                                     "mlp": ["bf16", "fp16", "int8"] if cuda else ["fp32", "bf16"]}},
             "recovery": {"steps": 0 if smoke else 10},
             "search": {"sampler": "tpe", "trials": opts["trials"], "workers": 1, "seed": 0},
             "output_dir": str(work / "runs" / "{name}")}
    return _write(work / "search_study.yaml", study)


def _write(path: Path, study: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
