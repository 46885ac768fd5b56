"""What a profile run needs from the study, resolved once: :class:`ProfileContext`.

A profile dir (``profiles/<study name>`` by default) is tied to one device (fingerprint,
runtime included), model, input shape and latency protocol: ``meta.json`` records them
when the dir is created, and a later run with another is refused in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.spaces.errors import ConfigError, DeviceError
from vitsearch.spaces.vit.dims import VitDims

from vitsearch.evaluators.latency.fingerprint import runtime_mismatch
from vitsearch.evaluators.latency.predict.study import default_profile_dir
from vitsearch.evaluators.latency.timing.plans import InterleavePlan, RoundRobinPlan
from vitsearch.evaluators.latency.timing.prepare import default_threads
from vitsearch.evaluators.latency.timing.results import PROTOCOL

#: A whole-model measurement in a profile stops at this many seconds of timed pairs at
#: most (or earlier at the study's ``latency.interleave`` target), so a profile's budget
#: buys a few hundred models.
PROFILE_MAX_SECONDS = 2.0


@dataclass
class ProfileContext:
    """What a profile run needs from the study session, resolved once."""

    session: Any
    out: Path
    space: Any
    dims: VitDims
    threads: int | None
    fingerprint: dict
    model_plan: RoundRobinPlan
    interleave: InterleavePlan | None = None
    runtime: str = "eager"
    programs: Any = None     # :class:`.programs.Programs` of the runtime
    stats: dict = None       # build / timing seconds and budget stops of this run

    @classmethod
    def of(cls, session: Any, out: str | Path | None) -> "ProfileContext":
        """Resolve from a loaded study Session; refuse a dir profiled on another device or shape."""
        spec, dev = session.spec, session.device
        programs = session.profile_programs()  # the study's runtime (evaluators/runtimes/profiling.py)
        threads = (spec.latency.threads or default_threads()) if dev.type == "cpu" else None
        fp = programs.fingerprint(dev, threads if threads is not None else 1)
        root = Path(out) if out else default_profile_dir(spec)
        lat = spec.latency
        plan = RoundRobinPlan(target_s=min(0.6, lat.max_seconds), min_passes=15, max_passes=lat.max_runs,
                              rounds=3, warmup=max(1, min(lat.warmup, 10)))
        il = lat.interleave
        inter = InterleavePlan(chunk=il.chunk, chunk_ms=il.chunk_ms, settle=il.settle,
                               target_halfwidth=il.target_halfwidth, min_pairs=il.min_pairs,
                               max_pairs=il.max_pairs, confidence=il.confidence,
                               max_seconds=min(il.max_seconds, PROFILE_MAX_SECONDS)).checked()
        ctx = cls(session, root, programs.space(spec.space, session.base, dev, session.base_precision), VitDims.of(session.base), threads,
                  fp, plan, inter, programs.name, programs, {"build_s": [], "model_s": [], "failed": [],
                                                             "budget_stop": False})
        ctx._check_meta()
        return ctx

    def meta_runtime(self) -> dict:
        """``{"runtime", "runtime_version"}`` the rows are measured in."""
        return self.programs.identity(self.session.device)

    def meta(self) -> dict:
        """The identity of this profile (what its rows are valid for)."""
        return {"study": self.session.spec.name, "model": self.session.spec.model.name, "latency_protocol": PROTOCOL,
                "input_shape": list(self.session.input_shape), "dims": self.dims.block_dict(),
                "fingerprint_id": self.fingerprint["fingerprint_id"], "fingerprint": self.fingerprint,
                "base_precision": self.session.base_precision, **self.meta_runtime()}

    def _check_meta(self) -> None:
        path = self.out / "meta.json"
        mine = self.meta()
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("latency_protocol") != mine["latency_protocol"]:
                raise ConfigError(f"profile dir {str(self.out)!r} holds timings of the old latency protocol "
                                  f"({old.get('latency_protocol') or 'one burst per model'}); re-profile into a new "
                                  "--out (or delete the dir) to measure interleaved ratios")
            if old.get("fingerprint_id") != mine["fingerprint_id"]:
                why = runtime_mismatch(old["fingerprint"], mine["fingerprint"]) if old.get("fingerprint") else None
                raise DeviceError(f"profile dir {str(self.out)!r} holds timings in {why}, into another --out"
                                  if why else f"profile dir {str(self.out)!r} holds timings of device "
                                  f"{old.get('fingerprint_id')}, this device is {mine['fingerprint_id']}; give "
                                  "another --out")
            old.setdefault("base_precision", "fp32")  # written before model.precision existed
            for k in ("model", "input_shape", "dims", "base_precision"):
                if old.get(k) != mine[k]:
                    raise ConfigError(f"profile dir {str(self.out)!r} was measured for {k} {old.get(k)!r}, this study "
                                      f"has {mine[k]!r}; give another --out")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(mine, indent=1, sort_keys=True))


def progress_bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="meas", disable=not enabled, dynamic_ncols=True)
