"""``vitsearch profile``: measure a study's device, then fit its latency predictor.

A profile dir (``profiles/<study name>`` by default) holds:

- ``meta.json``: the study name, input shape, base-model dims, device fingerprint and
  the runtime with its version (``runtime``, ``runtime_version``);
- ``timings/part-*.parquet``: one row per measurement (component or whole model) with
  every raw pass time, the fingerprint and the load average at the time; each chunk is
  written as its own file as soon as it is measured, so a killed profile keeps what it
  measured and a restart skips those keys;
- ``predictor.json``: the fitted predictor (:mod:`..predict`).

The table is :mod:`.store`, the configs :mod:`.sampling`, the dir's identity
:mod:`.context`, the fit :mod:`.fitting`, the sitting spread :mod:`.sitting`.

Phase 1 times the components (:mod:`.components`); phase 2 whole models compressed with
configs spread over the space (presets, then a scrambled Sobol sequence over the Optuna
distributions, deduplicated), until the sample is done or nine tenths of the time budget
are spent; phase 3 measures up to eight of the earliest-measured models again, minutes
later: how far a ratio moves between sittings beyond each sitting's own interval
(:mod:`.sitting`, ``sitting_sd`` in the predictor) - every measured interval of
the study includes it (:func:`..stats.widen`).

In a runtime other than eager (``latency.runtime``) there is no phase 1: each config is
built into the program a search would deploy (:mod:`.programs`), timed whole, and
fitted by the whole-model predictor (:mod:`..predict.whole`). The meta and every row name the
runtime and its version (in the fingerprint too, so another runtime's predictor is
refused); each row records the program's build seconds apart from its latency, and the
time budget counts them (a model is not started when the mean build + timing of one
would overrun it).
``refine`` (:mod:`.refine`) adds whole-model measurements where the fitted predictor is
least certain (and re-measures the configs it fits worst), then refits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vitsearch.spaces import CompressionConfig, compress
from vitsearch.spaces.errors import VitsearchError

from vitsearch.evaluators.latency.profile.components import (ComponentPlan, key_json, one_block_base, part_module,
                                                             plan_components, reduce_fn, stem_model)
from vitsearch.evaluators.latency.profile.context import ProfileContext, progress_bar
from vitsearch.evaluators.latency.profile.fitting import fit_from_store
from vitsearch.evaluators.latency.profile.programs import run_stats, stop_before
from vitsearch.evaluators.latency.profile.sampling import sample_configs
from vitsearch.evaluators.latency.profile.sitting import REPEATS
from vitsearch.evaluators.latency.profile.store import ProfileStore, model_row, row
from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
from vitsearch.evaluators.latency.timing.plans import RoundRobinPlan
from vitsearch.evaluators.latency.timing.results import PROTOCOL
from vitsearch.evaluators.latency.timing.roundrobin import time_round_robin

N_MODELS = 400        # whole-model sample upper bound; the budget usually stops earlier
CHUNK = 6             # model rows written per part file
REPEAT_SHARE = 0.1  # of the time budget kept for measuring models again (the sitting spread, .sitting)
COMPONENT_PLAN = RoundRobinPlan(target_s=0.15, min_passes=15, max_passes=300, rounds=3, warmup=5)


def run_profile(session: Any, out: str | Path | None = None, budget_minutes: float = 8.0,
                n_models: int = N_MODELS, seed: int = 0, progress: bool = True) -> dict:
    """Measure components and whole models (resuming), then fit and save the predictor."""
    ctx = ProfileContext.of(session, out)
    store = ProfileStore(ctx.out)
    deadline = time.monotonic() + budget_minutes * 60.0
    done = {r["key"] for r in store.rows() if r["phase"] in ("profile", "refine")}
    plan = plan_components(ctx.space, ctx.dims)
    # a runtime program is built for a whole model: its parts are not timed apart (see the module doc)
    items = [it for it in plan.items() if key_json(*it) not in done] if ctx.programs.times_components else []
    configs = [c for c in sample_configs(ctx.space, n_models, seed) if c.to_json(sort_keys=True) not in done]
    bar = progress_bar(len(items) + len(configs), progress, f"profile {ctx.out.name}")
    started = time.monotonic()
    _measure_components(ctx, plan, items, store, bar, deadline)
    # the last tenth of the budget is kept for measuring a few early models again (the sitting spread)
    measured = measure_models(ctx, configs, store, bar, deadline - REPEAT_SHARE * budget_minutes * 60.0, "profile")
    bar.close()
    measure_repeats(ctx, store, deadline, progress)
    predictor = fit_from_store(ctx)
    return {"dir": str(ctx.out), "components": len(plan.items()) if ctx.programs.times_components else 0,
            "models_measured_now": measured, "models_total": predictor.state["n_models"],
            "seconds": round(time.monotonic() - started, 1), "fingerprint_id": ctx.fingerprint["fingerprint_id"],
            "train_mape": predictor.state.get("train_mape"),
            "stopped_by_budget": ctx.stats["budget_stop"] or time.monotonic() >= deadline, **run_stats(ctx)}


def measure_repeats(ctx: ProfileContext, store: ProfileStore, deadline: float, progress: bool) -> None:
    """Measure the earliest-measured models again (phase "repeat"), minutes after their first measurement."""
    rows = store.rows()
    again = {r["key"] for r in rows if r["phase"] == "repeat"}
    first = sorted((r for r in rows if r["kind"] == "model" and r["phase"] == "profile"
                    and r.get("protocol") == PROTOCOL and r["key"] not in again), key=lambda r: r["measured_at"])
    want = max(0, REPEATS - len(again))
    configs = [CompressionConfig.from_json(r["key"]) for r in first[:want]]
    if configs:
        bar = progress_bar(len(configs), progress, f"profile {ctx.out.name}: sitting spread")
        measure_models(ctx, configs, store, bar, deadline, "repeat")
        bar.close()


def _measure_components(ctx: ProfileContext, plan: ComponentPlan, items: list, store: ProfileStore, bar,
                        deadline: float) -> None:
    dev, base, B = ctx.session.device, ctx.session.base, ctx.session.input_shape[0]
    one = one_block_base(base)
    groups: dict[tuple[str, str], list[int]] = {}
    for part, key, n in items:
        groups.setdefault((part, key), []).append(n)
    for (part, key), counts in groups.items():
        if time.monotonic() >= deadline:
            return
        if part == "stem":
            stem = stem_model(base).to(dev)
            x = torch.randn(ctx.session.input_shape, device=dev)
            fns, extra = [lambda: stem(x)], [{}]
        elif part == "reduce":
            fns = [reduce_fn(key, n, ctx.dims, B, str(dev)) for n in counts]
            extra = [{} for _ in counts]
        else:
            entry = getattr(plan, part)[key]
            try:
                mod = part_module(one, part, entry["config"], str(dev))
            except VitsearchError as exc:  # a precision this device cannot run: skip the component, say why
                ctx.stats["failed"].append(f"component {part} {key}: {exc}")
                bar.update(len(counts))
                continue
            xs = [torch.randn(B, n, ctx.dims.embed_dim, device=dev) for n in counts]
            fns = [(lambda m=mod, t=t: m(t)) for t in xs]
            prec = entry["config"]["precision"][part]
            extra = [{"precision": prec} for _ in counts]
        samples = time_round_robin(fns, COMPONENT_PLAN, ctx.threads, dev)
        store.append([row("component", key_json(part, key, n), s, ctx.fingerprint, "profile", part=part,
                          component=key, tokens=int(n), **e) for n, s, e in zip(counts, samples, extra)])
        bar.update(len(counts))


def measure_models(ctx: ProfileContext, configs: list, store: ProfileStore, bar, deadline: float,
                   phase: str, sub: str | None = None, sitting_sd: float | None = None) -> int:
    """Build each config's program (compressed model, or runtime program) and time it interleaved
    with the uncompressed eager model; returns how many.

    One row per config (written ``CHUNK`` at a time): the ratio to the reference with its
    interval (:mod:`..timing.interleaved`), the candidate's and the reference's raw pass times.
    The ratio cancels what the shared machine does to both over the seconds they
    alternate, so a profile taken under load predicts the same ratios as a quiet one.
    """
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
        r = measure_interleaved(built.module, session.reference, session.input_shape, session.device,
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


def time_reference(session: Any, profile_dir: str | Path | None = None) -> dict:
    """Time the uncompressed model now (a round-robin burst): ``median_ms``, ``p10_ms``, ``n_runs``, ...

    With :meth:`..predict.base.LatencyPredictor.calibrated` it rescales a profile to the device's current speed.
    """
    ctx = ProfileContext.of(session, profile_dir)
    samples = time_round_robin([model_fns(session, [session.reference_config])[0]], ctx.model_plan, ctx.threads,
                               session.device)
    return row("reference", "reference", samples[0], ctx.fingerprint, "calibration")


def model_fns(session: Any, configs: list) -> list:
    """One forward-pass callable per config (compressed without calibration data: shapes only)."""
    x = torch.randn(session.input_shape, generator=torch.Generator().manual_seed(0)).to(session.device)
    models = [compress(session.base, c, calibration=None, device=str(session.device)) for c in configs]
    return [(lambda m=m: m(x)) for m in models]
