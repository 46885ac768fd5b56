"""The in-process steps of the GPU check (each runs in a child process of check.py).

Every step takes the options dict check.py passes and the output folder, writes its
JSON file as it goes, and returns nothing; an exception is the step's error.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

WHEEL_PACKAGES = ("pydantic", "pydantic_core", "optuna", "colorlog", "torchao", "mlxtend", "timm", "sqlalchemy",
                  "ray", "typing_extensions")
MACHINE_PACKAGES = ("torch", "triton", "numpy", "onnxruntime", "onnx", "nvidia-ml-py", "scipy", "pandas")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a killed step leaves the previous version, never half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
    os.replace(tmp, path)


def env(opts: dict, out: Path) -> None:
    """GPU, driver, clocks, power limit and versions (torch, CUDA, cuDNN, cuSPARSELt, torchao, triton, timm)."""
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    for name in WHEEL_PACKAGES + MACHINE_PACKAGES:
        try:
            facts.setdefault("packages", {})[name] = md.version(name)
        except md.PackageNotFoundError:
            facts.setdefault("packages", {})[name] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, capability=list(torch.cuda.get_device_capability(0)), sm_count=p.multi_processor_count,
                     memory_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                     cusparselt=_cusparselt(), sdpa={"flash": torch.backends.cuda.flash_sdp_enabled(),
                                                      "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                                      "cudnn": torch.backends.cuda.cudnn_sdp_enabled()})
    facts["nvidia_smi"] = _nvidia_smi()
    from vitsearch.evaluators import device_fingerprint, resolve_device

    facts["fingerprint"] = device_fingerprint(resolve_device(opts["device"]))
    write_json(out / "env.json", facts)


def _cusparselt() -> Any:
    import torch

    try:
        return torch.backends.cusparselt.version()
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        return f"{type(exc).__name__}: {exc}"


def _nvidia_smi() -> Any:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not on PATH"
    fields = ("name,driver_version,pstate,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.draw,power.limit,"
              "temperature.gpu,utilization.gpu,memory.used,memory.total")
    r = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv"], capture_output=True, text=True,
                       timeout=30)
    return r.stdout.strip() if r.returncode == 0 else f"rc {r.returncode}: {r.stderr.strip()[:300]}"


def knobs(opts: dict, out: Path) -> None:
    """Part 2 for one model (``opts['model']``): every batch, then compiled rows; rows written as they come."""
    from knobtable import table_rows
    from vitsearch.evaluators import InterleavePlan

    path, smoke = out / f"knobs_{opts['model']}.json", opts["smoke"]
    doc = {"model": opts["model"], "reference": "dense bf16 (vitsearch bf16 cast, SDPA) of the same batch"
           + (" (fp32 in a --smoke run)" if smoke else ""),
           "speedup": "reference ms / candidate ms, interleaved; interval: the ratio's bootstrap interval inverted",
           "rows": []}
    plan = (InterleavePlan(chunk=1, warmup=1, min_pairs=3, max_pairs=3, max_seconds=0.2, n_boot=50) if smoke
            else InterleavePlan(max_seconds=1.5, target_halfwidth=0.02))

    def emit(row: dict) -> None:
        doc["rows"].append(row)
        write_json(path, doc)

    deadline = opts["deadline"]
    batches = opts["batches"]
    warm(opts)
    for i, batch in enumerate(batches):
        # leave the compiled rows their share of the time: they come after the last batch
        table_rows(opts["model"], batch, opts["device"], plan, deadline - (0 if smoke else 60), emit,
                   compiled=opts["compile"] and i == len(batches) - 1, smoke=smoke)
    write_json(path, doc)


def macs_baseline(opts: dict, out: Path) -> None:
    """A MACs-only predictor (ratio = a + b * MACs ratio, least squares) on the held-out configs.

    Fitted on the profile's whole-model measurements where they can be read, else
    leave-one-out over the held-out set itself (a baseline seeing more of that set than
    vitsearch's predictor); scored beside vitsearch's predictor, overall and by kind.
    """
    import numpy as np
    from scipy.stats import spearmanr

    from vitsearch.evaluators import ModelSpec, analytic_macs, load_base_model
    from vitsearch.spaces.config import CompressionConfig

    rows = json.loads((out / "predictor_eval.json").read_text())["rows"]
    base = load_base_model(ModelSpec(opts["arch"], pretrained=False))
    full = analytic_macs(base, CompressionConfig())
    m_of = lambda key: analytic_macs(base, CompressionConfig.from_json(key)) / full  # noqa: E731
    x = np.array([m_of(r["config"]) for r in rows])
    y = np.array([r["measured_ratio"] for r in rows])
    train, how = _profile_training(Path(opts["profile_dir"])), "fitted on the profile's whole-model measurements"
    if len(train) >= 3:
        a, b = np.polyfit([m_of(k) for k, _ in train], [v for _, v in train], 1)[::-1]
        pred_macs = a + b * x
    else:
        how = "leave-one-out over the held-out configs (the profile's rows could not be read)"
        pred_macs = np.array([np.polyval(np.polyfit(np.delete(x, i), np.delete(y, i), 1), x[i]) for i in range(len(x))])
    pred_vs = np.array([r["predicted_ratio"] for r in rows])
    doc = {"macs_predictor": how, "n": len(rows), "groups": {}}
    for group, keep in _groups(rows).items():
        if keep.sum() >= 2:
            doc["groups"][group] = {"n": int(keep.sum()), "vitsearch": _scores(y[keep], pred_vs[keep], spearmanr),
                                    "macs_only": _scores(y[keep], pred_macs[keep], spearmanr)}
    write_json(out / "macs_baseline.json", doc)


def _profile_training(profile_dir: Path) -> list[tuple[str, float]]:
    try:  # the profile store's module moves with evaluators/latency's layout; without it: leave-one-out
        from vitsearch.evaluators.latency.profile.store import ProfileStore

        return [(r["key"], r["ratio"]) for r in ProfileStore(profile_dir).rows()
                if r.get("kind") == "model" and r.get("phase") == "profile" and r.get("ratio")]
    except Exception:  # noqa: BLE001
        return []


def _groups(rows: list[dict]):
    import numpy as np

    text = [r["config"] for r in rows]
    has = lambda *s: np.array([any(k in t for k in s) for t in text])  # noqa: E731
    return {"all": np.ones(len(rows), bool), "2:4": has('"2:4"'), "int8/fp8": has('"int8"', "fp8"),
            "tokens": has('"merge"', '"prune"')}


def _scores(measured, predicted, spearmanr) -> dict[str, float]:
    import numpy as np

    err = np.abs(np.asarray(predicted) / np.asarray(measured) - 1)
    rho = spearmanr(measured, predicted).statistic if len(measured) > 2 else math.nan
    return {"within_10pct": float(np.mean(err <= 0.10)), "mape": float(np.mean(err)), "spearman": float(rho)}


def warm(opts: dict) -> None:
    """Load the GPU for a few seconds so its SM clock has risen before the first timing (idle: ~345 MHz)."""
    import torch

    if not opts["device"].startswith("cuda"):
        return
    a = torch.randn(4096, 4096, device=opts["device"], dtype=torch.bfloat16)
    end = time.monotonic() + (1 if opts["smoke"] else 8)
    while time.monotonic() < end:
        a @ a
    torch.cuda.synchronize()


STEPS = {"env": env, "knobs": knobs, "macs_baseline": macs_baseline}
