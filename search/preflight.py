"""Checks made before anything slow or irreversible: before Ray starts, a model loads or a file is written.

Each raises a :class:`ConfigError` with one line (what, the value, what is accepted);
none writes anything. The study schema (:mod:`vitsearch.search.study`) judges single
fields; these judge what needs the file system or the machine: output folders, the
memory a latency batch needs, a predictor path, the number of workers, the runtime on this device.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from vitsearch.search.studyfile import shown
from vitsearch.spaces.errors import ConfigError

#: more concurrent trials than this is a typo, whatever the cluster
MAX_WORKERS = 256
#: local runs: trials at a time per CPU Ray is given (more only queue up and share cores)
WORKERS_PER_CPU = 4
#: input sizes of models whose size is known without building them
BUILTIN_INPUT = {"builtin:vitsearch-tiny": (1, 28, 28)}


def check_out_dir(path: str | Path, flag: str) -> None:
    """``path`` can become a folder we write into: not a file, under a writable existing folder."""
    p = _given(path, flag)
    if _exists(p, flag) and not p.is_dir():
        raise ConfigError(f"{flag}: {shown(str(p))} is an existing file, not a folder; give a folder path")
    _check_writable_ancestor(p, flag)


def check_out_file(path: str | Path, flag: str) -> None:
    """``path`` can become a file we write: not a folder, its folder writable."""
    p = _given(path, flag)
    if _exists(p, flag) and p.is_dir():
        raise ConfigError(f"{flag}: {shown(str(p))} is a folder; give a file path")
    _check_writable_ancestor(p.parent if str(p.parent) else Path("."), flag)


def _given(path: str | Path, flag: str) -> Path:
    if not str(path).strip():
        raise ConfigError(f"{flag}: an empty path; give a folder path, or leave {flag} out for the default")
    return Path(path)


def _exists(p: Path, flag: str) -> bool:
    try:
        return p.exists()
    except OSError as exc:  # a name too long, a loop of links
        raise ConfigError(f"{flag}: {shown(str(p))} is not a usable path ({exc.strerror}); give another "
                          "path") from None


def _check_writable_ancestor(p: Path, flag: str) -> None:
    anc = p.absolute()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{flag}: {shown(str(p))} is not a possible folder: {shown(str(anc))} is a file; give "
                          "another path")
    if not os.access(anc, os.W_OK | os.X_OK) or os.statvfs(anc).f_flag & os.ST_RDONLY:
        raise ConfigError(f"{flag}: {shown(str(p))} is not writable (no write permission in {shown(str(anc))}); "
                          "give a path in a folder you can write")
    try:  # what permissions do not tell: /proc, /sys, a full disk, root on a read-only mount
        os.rmdir(tempfile.mkdtemp(prefix=".vitsearch-probe-", dir=anc))
    except OSError as exc:
        raise ConfigError(f"{flag}: {shown(str(p))} cannot be created (making a folder in {shown(str(anc))} "
                          f"failed: {exc.strerror}); give a path in a folder you can write") from None


def check_workers(workers: int, cpus: int, local: bool, flag: str = "--workers") -> None:
    """A sane number of concurrent trials: at most 4 per CPU of a local Ray and never above 256."""
    cap = min(MAX_WORKERS, WORKERS_PER_CPU * cpus) if local else MAX_WORKERS
    if workers > cap:
        where = f"{WORKERS_PER_CPU} per CPU of the {cpus} a local Ray gets, at most {MAX_WORKERS}" if local \
            else f"at most {MAX_WORKERS}"
        raise ConfigError(f"{flag}: {workers} trials at a time is more than allowed here ({where}); "
                          f"give {flag} 1..{cap}")


def available_memory_bytes() -> int | None:
    """Memory available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _input_size(spec) -> tuple[int, ...] | None:
    if spec.latency.input_size is not None:
        return tuple(spec.latency.input_size)
    name = spec.model.name
    if name in BUILTIN_INPUT:
        return BUILTIN_INPUT[name]
    if name.startswith("timm:"):
        import timm

        cfg = timm.get_pretrained_cfg(name.removeprefix("timm:"))
        return tuple(cfg.input_size) if cfg is not None and cfg.input_size else None
    return None


def check_latency_batch(spec) -> None:
    """Refuse a latency batch whose input tensor alone (fp32) exceeds the memory available now."""
    size = _input_size(spec)
    free = available_memory_bytes()
    if size is None or free is None:
        return
    need = spec.latency.batch_size * math.prod(size) * 4
    if need > free:
        fits = max(1, free // (math.prod(size) * 4))
        raise ConfigError(
            f"latency.batch_size: {spec.latency.batch_size} inputs of {'x'.join(map(str, size))} need "
            f"{need / 2**30:,.1f} GiB for the input alone, more than the {free / 2**30:,.1f} GiB available; "
            f"give at most {fits:,} (a real batch size is far smaller)")


def check_predictor_path(spec) -> None:
    """A ``latency.predictor`` path (not auto/off) must exist."""
    mode = spec.latency.predictor
    if mode not in ("auto", "off") and not Path(mode).exists():
        raise ConfigError(f"latency.predictor: {shown(mode)} does not exist; give a profile dir written by "
                          "`vitsearch profile`, 'auto' or 'off'")


def check_study(spec) -> None:
    """Every machine-dependent check of a study to run that needs no model: before Ray or a model."""
    check_predictor_path(spec)
    check_latency_batch(spec)


def check_study_runtime(spec, device) -> list[str]:
    """Validate ``latency.runtime`` for ``device`` before anything loads or is written.

    One line, exit 2, for a runtime whose package is missing (with the install hint),
    ``tensorrt`` without CUDA, a ``model.precision`` or a precision the study's space names
    explicitly that the runtime cannot realise. Returns the notes on default choices left
    out of the space.
    """
    from vitsearch.evaluators.runtimes import check_runtime
    from vitsearch.evaluators.runtimes.support import runtime_space

    check_runtime(spec.latency.runtime, device)
    study_base_precision(spec, device)
    return runtime_space(spec.space, spec.latency.runtime, str(device))[1]


def study_base_precision(spec, device) -> str:
    """``model.precision`` resolved for ``device`` in the study's runtime (ConfigError if it cannot run there).

    ``auto``: on CUDA the first of bf16, fp16 the runtime realises there (what a GPU user
    deploys), else fp32; on CPU fp32 (without importing torch).
    """
    runtime, value = spec.latency.runtime, spec.model.precision
    if value == "auto" and not str(device).startswith("cuda"):
        return "fp32"
    from vitsearch.evaluators.runtimes.support import precision_refusal, precisions
    from vitsearch.spaces.knobs.precision import BASE_PRECISIONS

    ok = precisions(runtime, device)
    if value == "auto":
        return next((p for p in ("bf16", "fp16") if p in ok), "fp32")
    why = precision_refusal(runtime, device, value)
    if why is not None:
        raise ConfigError(f"model.precision: {value!r} cannot run in runtime {runtime!r} on {device}: {why}; "
                          f"accepted there: auto, {', '.join(p for p in ok if p in BASE_PRECISIONS)}")
    return value


def runtime_search_space(spec, base, device, calibration=None):
    """The study's SearchSpace in its runtime: refused default choices left out, with notes saying so.

    ``calibration``: the study's calibration split, for a saliency allocation (loaded here when not given).
    """
    from vitsearch.evaluators.runtimes import get_runtime
    from vitsearch.evaluators.runtimes.support import runtime_search_space as in_runtime
    from vitsearch.evaluators.sensitivity import study_sensitivity

    if calibration is None:
        calibration = _allocation_calibration(spec, base)
    runtime = spec.latency.runtime
    sensitivity = study_sensitivity(spec.space, base, get_runtime(runtime), device, calibration,
                                    spec.latency.batch_size)
    return in_runtime(spec.space, base, runtime, device, calibration, study_base_precision(spec, device), sensitivity)


def _allocation_calibration(spec, base):
    """The calibration split (the images candidates are ranked on) when ``space.allocation`` needs it, else None."""
    if spec.space.allocation.mode != "saliency" and spec.space.allocation.precision != "sensitivity":
        return None
    from vitsearch.evaluators.data import load_imagefolder, load_mnist5k

    d = spec.data
    if d.source == "mnist5k":
        return load_mnist5k(seed=d.seed, calibration_size=d.calibration_size).calibration
    return load_imagefolder(d.path, base, d.calibration_size, d.seed, d.skip_unreadable).calibration
