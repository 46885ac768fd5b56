"""``vitsearch profile``: measure a study's device, then fit its LatencyPredictor.

A profile dir (``profiles/<study name>`` by default) holds:

- ``meta.json``: the study name, input shape, base-model dims, device fingerprint and
  the runtime with its version (``runtime``, ``runtime_version``);
- ``timings/part-*.parquet``: one row per measurement (component or whole model) with
  every raw pass time, the fingerprint and the load average at the time; each chunk is
  written as its own file as soon as it is measured, so a killed profile keeps what it
  measured and a restart skips those keys;
- ``predictor.json``: the fitted :class:`~.predictor.LatencyPredictor`.

Phase 1 times the components (:mod:`.components`); phase 2 whole models compressed with
configs spread over the space (presets, then a scrambled Sobol sequence over the Optuna
distributions, deduplicated), until the sample is done or nine tenths of the time budget
are spent; phase 3 measures up to eight of the earliest-measured models again, minutes
later: how far a ratio moves between sittings beyond each sitting's own interval
(:mod:`.sitting`, ``sitting_sd`` in the predictor) - every measured interval of
the study includes it (:func:`.interleaved.widen`).

In a runtime other than eager (``latency.runtime``) there is no phase 1: each config is
built into the program a search would deploy (:mod:`.programs`), timed whole, and
fitted by the whole-model predictor (:mod:`.wholemodel`). The meta and every row name the
runtime and its version (in the fingerprint too, so another runtime's predictor is
refused); each row records the program's build seconds apart from its latency, and the
time budget counts them (a model is not started when the mean build + timing of one
would overrun it).
``refine`` (:mod:`.refine`) adds whole-model measurements where the fitted predictor is
least certain (and re-measures the configs it fits worst), then refits.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vitsearch.spaces.errors import ConfigError, DeviceError

from vitsearch.evaluators.latency import components as comp
from vitsearch.evaluators.latency.timing import TimingPlan

N_MODELS = 400        # whole-model sample upper bound; the budget usually stops earlier
CHUNK = 6             # model rows written per part file
#: A whole-model measurement in a profile stops at this many seconds of timed pairs at
#: most (or earlier at the study's ``latency.interleave`` target), so a profile's budget
#: buys a few hundred models.
PROFILE_MAX_SECONDS = 2.0
REPEAT_SHARE = 0.1  # of the time budget kept for measuring models again (the sitting spread, .sitting)
COMPONENT_PLAN = TimingPlan(target_s=0.15, min_passes=15, max_passes=300, rounds=3, warmup=5)


# ---- the table ------------------------------------------------------------------------
class ProfileStore:
    """The parquet part files of one profile dir (append-only, one file per chunk)."""

    def __init__(self, root: str | Path, sub: str = "timings") -> None:
        self.root = Path(root)
        self.dir = self.root / sub

    def rows(self) -> list[dict]:
        """Every row measured so far."""
        import pandas as pd

        files = sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []
        if not files:
            return []
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True).to_dict("records")

    def append(self, rows: list[dict]) -> None:
        """Write ``rows`` as a new part file (atomic rename: never a half-written part)."""
        import pandas as pd

        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        n = len(list(self.dir.glob("part-*.parquet")))
        path = self.dir / f"part-{n:05d}-{os.getpid()}-{time.time_ns() % 10**9}.parquet"
        tmp = path.with_suffix(".tmp")
        pd.DataFrame(rows).to_parquet(tmp, index=False)
        tmp.replace(path)


def row(kind: str, key: str, samples: list[float], fingerprint: dict, phase: str, **extra: Any) -> dict:
    """One measurement row: statistics and every raw sample, with the fingerprint and load."""
    import numpy as np

    arr = np.asarray(samples)
    return {"kind": kind, "key": key, "phase": phase, "median_ms": float(np.median(arr)),
            "p10_ms": float(np.percentile(arr, 10)), "p90_ms": float(np.percentile(arr, 90)),
            "n_runs": len(samples), "samples_ms": [float(s) for s in samples],
            "load_avg_1m": round(os.getloadavg()[0], 2), "fingerprint_id": fingerprint["fingerprint_id"],
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}


# ---- sampling configs -------------------------------------------------------------------
def sample_configs(space: Any, n: int, seed: int = 0, presets: bool = True, exclude: set[str] = frozenset()) -> list:
    """Up to ``n`` distinct configs spread over ``space``: presets, then scrambled Sobol points."""
    from optuna.distributions import IntDistribution
    from scipy.stats import qmc

    dists = space.distributions()
    names = sorted(dists)
    out, seen = [], set(exclude)

    def add(config) -> None:
        key = config.to_json(sort_keys=True)
        if key not in seen and len(out) < n:
            seen.add(key)
            out.append(config)

    if presets:
        for c in space.presets():
            add(c)
    if not names:
        return out
    sobol = qmc.Sobol(len(names), scramble=True, seed=seed)
    tries = 0
    while len(out) < n and tries < 8 * n + 64:
        for u in sobol.random(64):
            params = {}
            for name, x in zip(names, u):
                d = dists[name]
                if isinstance(d, IntDistribution):
                    params[name] = min(d.high, d.low + int(x * (d.high - d.low + 1)))
                else:
                    params[name] = d.choices[min(len(d.choices) - 1, int(x * len(d.choices)))]
            add(space.config_from_params(params))
            tries += 1
    return out


# ---- the run ---------------------------------------------------------------------------
@dataclass
class ProfileContext:
    """What a profile run needs from the study session, resolved once."""

    session: Any
    out: Path
    space: Any
    dims: comp.Dims
    threads: int | None
    fingerprint: dict
    model_plan: TimingPlan
    interleave: Any = None
    runtime: str = "eager"
    programs: Any = None     # :class:`.programs.Programs` of the runtime
    stats: dict = None       # build / timing seconds and budget stops of this run

    @classmethod
    def of(cls, session: Any, out: str | Path | None) -> "ProfileContext":
        """Resolve from a loaded study Session; refuse a dir profiled on another device or shape."""
        from vitsearch.evaluators.latency.measure import default_threads
        from vitsearch.evaluators.latency.predictor import default_profile_dir

        spec, dev = session.spec, session.device
        programs = session.profile_programs()  # eager, or the study's runtime (evaluators/runtimes/profiling.py)
        threads = (spec.latency.threads or default_threads()) if dev.type == "cpu" else None
        fp = programs.fingerprint(dev, threads if threads is not None else 1)
        root = Path(out) if out else default_profile_dir(spec)
        lat = spec.latency
        plan = TimingPlan(target_s=min(0.6, lat.max_seconds), min_passes=15, max_passes=lat.max_runs, rounds=3,
                          warmup=max(1, min(lat.warmup, 10)))
        from vitsearch.evaluators.latency.interleaved import InterleavePlan

        il = lat.interleave
        inter = InterleavePlan(chunk=il.chunk, chunk_ms=il.chunk_ms, settle=il.settle,
                               target_halfwidth=il.target_halfwidth, min_pairs=il.min_pairs,
                               max_pairs=il.max_pairs, confidence=il.confidence,
                               max_seconds=min(il.max_seconds, PROFILE_MAX_SECONDS)).checked()
        ctx = cls(session, root, programs.space(spec.space, session.base, dev), comp.Dims.of(session.base), threads,
                  fp, plan, inter, programs.name, programs, {"build_s": [], "model_s": [], "failed": [],
                                                             "budget_stop": False})
        ctx._check_meta()
        return ctx

    def meta_runtime(self) -> dict:
        """``{"runtime", "runtime_version"}`` the rows are measured in."""
        return self.programs.identity(self.session.device)

    def meta(self) -> dict:
        """The identity of this profile (what its rows are valid for)."""
        from vitsearch.evaluators.latency.interleaved import PROTOCOL

        return {"study": self.session.spec.name, "model": self.session.spec.model.name, "latency_protocol": PROTOCOL,
                "input_shape": list(self.session.input_shape), "dims": self.dims.to_dict(),
                "fingerprint_id": self.fingerprint["fingerprint_id"], "fingerprint": self.fingerprint,
                **self.meta_runtime()}

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
                from vitsearch.evaluators.latency.fingerprint import runtime_mismatch

                why = runtime_mismatch(old["fingerprint"], mine["fingerprint"]) if old.get("fingerprint") else None
                raise DeviceError(f"profile dir {str(self.out)!r} holds timings in {why}, into another --out"
                                  if why else f"profile dir {str(self.out)!r} holds timings of device "
                                  f"{old.get('fingerprint_id')}, this device is {mine['fingerprint_id']}; give "
                                  "another --out")
            for k in ("model", "input_shape", "dims"):
                if old.get(k) != mine[k]:
                    raise ConfigError(f"profile dir {str(self.out)!r} was measured for {k} {old.get(k)!r}, this study "
                                      f"has {mine[k]!r}; give another --out")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(mine, indent=1, sort_keys=True))


def run_profile(session: Any, out: str | Path | None = None, budget_minutes: float = 8.0,
                n_models: int = N_MODELS, seed: int = 0, progress: bool = True) -> dict:
    """Measure components and whole models (resuming), then fit and save the predictor."""
    from vitsearch.evaluators.latency.programs import run_stats
    ctx = ProfileContext.of(session, out)
    store = ProfileStore(ctx.out)
    deadline = time.monotonic() + budget_minutes * 60.0
    done = {r["key"] for r in store.rows() if r["phase"] in ("profile", "refine")}
    plan = comp.plan_components(ctx.space, ctx.dims)
    # a runtime program is built for a whole model: its parts are not timed apart (see the module doc)
    items = [it for it in plan.items() if comp.key_json(*it) not in done] if ctx.runtime == "eager" else []
    configs = [c for c in sample_configs(ctx.space, n_models, seed) if c.to_json(sort_keys=True) not in done]
    bar = _bar(len(items) + len(configs), progress, f"profile {ctx.out.name}")
    started = time.monotonic()
    _measure_components(ctx, plan, items, store, bar, deadline)
    # the last tenth of the budget is kept for measuring a few early models again (the sitting spread)
    measured = _measure_models(ctx, configs, store, bar, deadline - REPEAT_SHARE * budget_minutes * 60.0, "profile")
    bar.close()
    _measure_repeats(ctx, store, deadline, progress)
    predictor = fit_from_store(ctx)
    return {"dir": str(ctx.out), "components": len(plan.items()) if ctx.runtime == "eager" else 0,
            "models_measured_now": measured, "models_total": predictor.state["n_models"],
            "seconds": round(time.monotonic() - started, 1), "fingerprint_id": ctx.fingerprint["fingerprint_id"],
            "train_mape": predictor.state.get("train_mape"),
            "stopped_by_budget": ctx.stats["budget_stop"] or time.monotonic() >= deadline, **run_stats(ctx)}


def _measure_repeats(ctx: ProfileContext, store: ProfileStore, deadline: float, progress: bool) -> None:
    """Measure the earliest-measured models again (phase "repeat"), minutes after their first measurement."""
    from vitsearch.evaluators.latency.interleaved import PROTOCOL
    from vitsearch.evaluators.latency.sitting import REPEATS
    from vitsearch.spaces import CompressionConfig

    rows = store.rows()
    again = {r["key"] for r in rows if r["phase"] == "repeat"}
    first = sorted((r for r in rows if r["kind"] == "model" and r["phase"] == "profile"
                    and r.get("protocol") == PROTOCOL and r["key"] not in again), key=lambda r: r["measured_at"])
    want = max(0, REPEATS - len(again))
    configs = [CompressionConfig.from_json(r["key"]) for r in first[:want]]
    if configs:
        bar = _bar(len(configs), progress, f"profile {ctx.out.name}: sitting spread")
        _measure_models(ctx, configs, store, bar, deadline, "repeat")
        bar.close()


def fit_from_store(ctx: ProfileContext) -> Any:
    """Fit the predictor on every row of the profile dir and save it there.

    The whole-model targets are the interleaved ratios times the profile's reference
    time (the median of the uncompressed model's time over every measurement), so the
    predictor predicts ratios in ms units: ms = ratio x ``reference_ms``.
    """
    import numpy as np

    from vitsearch.spaces import CompressionConfig

    from vitsearch.evaluators.latency.fit import fit_predictor
    from vitsearch.evaluators.latency.interleaved import PROTOCOL
    from vitsearch.evaluators.latency.sitting import sitting_spread

    rows = [r for r in ProfileStore(ctx.out).rows() if r["fingerprint_id"] == ctx.fingerprint["fingerprint_id"]]
    components = [r for r in rows if r["kind"] == "component"]
    if not components and ctx.runtime == "eager":
        raise ConfigError(f"profile dir {str(ctx.out)!r}: no component timings yet; give a larger --budget-minutes")
    model_rows = [r for r in rows if r["kind"] == "model" and r.get("protocol") == PROTOCOL]
    ref = float(np.median([r["ref_median_ms"] for r in model_rows])) if model_rows else None
    sitting_sd, sitting_pairs = sitting_spread(model_rows, ctx.interleave.confidence)
    model_rows = [r for r in model_rows if r["phase"] != "repeat"]  # a config's second measurement: spread only
    models = [(CompressionConfig.from_json(r["key"]), r["ratio"] * ref) for r in model_rows]
    meta = {"reference_ms": ref, "sitting_sd": sitting_sd, "sitting_pairs": sitting_pairs,
            "latency_protocol": PROTOCOL, "study": ctx.session.spec.name,
            "model": ctx.session.spec.model.name, "statistic": "ratio", **ctx.meta_runtime(),
            "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if ctx.runtime != "eager":  # whole models only (:mod:`.wholemodel`)
        from vitsearch.evaluators.latency.fit import fit_whole_model

        predictor = fit_whole_model(ctx.dims, models, ctx.fingerprint, tuple(ctx.session.input_shape), meta)
    else:
        predictor = fit_predictor(ctx.dims, components, models, ctx.fingerprint, tuple(ctx.session.input_shape),
                                  meta)
    predictor.save(ctx.out)
    return predictor


def _measure_components(ctx: ProfileContext, plan: comp.Plan, items: list, store: ProfileStore, bar,
                        deadline: float) -> None:
    import torch

    from vitsearch.evaluators.latency.devicelock import device_lock
    from vitsearch.evaluators.latency.timing import time_interleaved

    dev, base, B = ctx.session.device, ctx.session.base, ctx.session.input_shape[0]
    one = comp.one_block_base(base)
    groups: dict[tuple[str, str], list[int]] = {}
    for part, key, n in items:
        groups.setdefault((part, key), []).append(n)
    for (part, key), counts in groups.items():
        if time.monotonic() >= deadline:
            return
        if part == "stem":
            stem = comp.stem_model(base).to(dev)
            x = torch.randn(ctx.session.input_shape, device=dev)
            fns, extra = [lambda: stem(x)], [{}]
        elif part == "reduce":
            fns = [comp.reduce_fn(key, n, ctx.dims, B, str(dev)) for n in counts]
            extra = [{} for _ in counts]
        else:
            entry = getattr(plan, part)[key]
            mod = comp.part_module(one, part, entry["config"], str(dev))
            xs = [torch.randn(B, n, ctx.dims.embed_dim, device=dev) for n in counts]
            fns = [(lambda m=mod, t=t: m(t)) for t in xs]
            prec = entry["config"]["precision"][part]
            extra = [{"precision": prec} for _ in counts]
        with device_lock(dev):
            samples = time_interleaved(fns, COMPONENT_PLAN, ctx.threads, dev)
        store.append([row("component", comp.key_json(part, key, n), s, ctx.fingerprint, "profile", part=part,
                          component=key, tokens=int(n), **e) for n, s, e in zip(counts, samples, extra)])
        bar.update(len(counts))


def _measure_models(ctx: ProfileContext, configs: list, store: ProfileStore, bar, deadline: float,
                    phase: str, sub: str | None = None, sitting_sd: float | None = None) -> int:
    """Build each config's program (compressed model, or runtime program) and time it interleaved
    with the uncompressed eager model; returns how many.

    One row per config (written ``CHUNK`` at a time): the ratio to the reference with its
    interval (:mod:`.interleaved`), the candidate's and the reference's raw pass times.
    The ratio cancels what the shared machine does to both over the seconds they
    alternate, so a profile taken under load predicts the same ratios as a quiet one.
    """
    from vitsearch.evaluators.latency.interleaved import measure_interleaved
    from vitsearch.evaluators.latency.programs import stop_before
    from vitsearch.spaces.errors import VitsearchError

    done, pending = 0, []
    target = ProfileStore(ctx.out, sub) if sub else store
    session, st = ctx.session, ctx.stats
    for c in configs:
        if stop_before(deadline, st["model_s"]):
            st["budget_stop"] = True
            break
        started = time.monotonic()
        try:
            built = ctx.programs.build(session, c, ctx.threads)
        except VitsearchError as exc:  # this program does not build in the runtime: say so, time the others
            st["failed"].append(f"{c.summary()}: {exc}")
            bar.write(f"not profiled: {c.summary()}: {exc}")
            continue
        r = measure_interleaved(built.module, session.base, session.input_shape, session.device,
                                threads=ctx.threads, plan=ctx.interleave, keep_samples=True,
                                sitting_sd=sitting_sd)
        pending.append(model_row(c, r, ctx.fingerprint, phase, build_seconds=built.build_seconds,
                                 export_seconds=built.export_seconds, program_reused=built.reused,
                                 **ctx.meta_runtime()))
        st["model_s"].append(time.monotonic() - started)
        if built.build_seconds is not None and not built.reused:
            st["build_s"].append(built.build_seconds)
        done += 1
        bar.update(1)
        if len(pending) >= CHUNK:
            target.append(pending)
            pending = []
    target.append(pending)
    return done


def model_row(config: Any, r: Any, fingerprint: dict, phase: str, **extra: Any) -> dict:
    """A profile row for one interleaved measurement (:class:`.interleaved.InterleavedResult`).

    ``extra``: the runtime and its version, and the program's build seconds (not latency).
    """
    out = row("model", config.to_json(sort_keys=True), r.samples["candidate"], fingerprint, phase,
              summary=config.summary(), ratio=r.ratio, ratio_low=r.ci_low, ratio_high=r.ci_high,
              ref_median_ms=r.reference_ms_now, ref_samples_ms=[float(v) for v in r.samples["reference"]],
              chunks=r.chunks, stop_reason=r.stop_reason, protocol=r.protocol, seconds=r.seconds,
              timing_nice=(r.thread_info.get("timing_thread") or {}).get("nice"), **extra)
    return out


def time_reference(session: Any, profile_dir: str | Path | None = None) -> dict:
    """Time the uncompressed model now (a round-robin burst): ``median_ms``, ``p10_ms``, ``n_runs``, ...

    With :meth:`LatencyPredictor.calibrated` it rescales a profile to the device's current speed.
    """
    from vitsearch.evaluators.latency.devicelock import device_lock
    from vitsearch.evaluators.latency.timing import time_interleaved

    ctx = ProfileContext.of(session, profile_dir)
    with device_lock(session.device):
        samples = time_interleaved([model_fns(session, [_base_config()])[0]], ctx.model_plan, ctx.threads,
                                   session.device)
    return row("reference", "reference", samples[0], ctx.fingerprint, "calibration")


def _base_config():
    from vitsearch.spaces import CompressionConfig

    return CompressionConfig()


def model_fns(session: Any, configs: list) -> list:
    """One forward-pass callable per config (compressed without calibration data: shapes only)."""
    import torch

    from vitsearch.spaces import compress

    x = torch.randn(session.input_shape, generator=torch.Generator().manual_seed(0)).to(session.device)
    models = [compress(session.base, c, calibration=None, device=str(session.device)) for c in configs]
    return [(lambda m=m: m(x)) for m in models]


def _bar(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="meas", disable=not enabled, dynamic_ncols=True)
