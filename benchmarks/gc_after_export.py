"""Does the garbage an ONNX export leaves slow the eager reference's timed passes?

    .venv/bin/python benchmarks/gc_after_export.py STUDY_WITH_ORT_RUNTIME.yaml

A candidate is built in ONNX Runtime once; then, six times, another export runs (its
garbage, as in a search) and the candidate is timed interleaved against the uncompressed
eager model with the garbage collector as it was before (on: "old") and as the protocol
now has it (collected, then off: "new"), in alternating order, plus a measurement with
no export before it ("steady"). Prints the reference's ms and the ratio of each.
"""
import contextlib
import statistics
import sys

import vitsearch.evaluators.latency.timing.context as timing
from vitsearch.search.session import load_session
from vitsearch.evaluators.latency.timing.interleaved import measure_interleaved
from vitsearch.spaces import CompressionConfig

session = load_session(sys.argv[1])
cfg = CompressionConfig.from_dict({"depth": {"keep": 5}, "precision": {"mlp": "int8"}})
pipe = session.pipeline
prep = pipe.prepare(cfg)
prog, _ = pipe.build(prep, cfg)
real = timing.gc_paused
rows = []
for i in range(6):
    for mode in ("old", "new") if i % 2 == 0 else ("new", "old"):
        pipe.build(prep, cfg)  # an export + quantisation: its garbage, as in a search
        timing.gc_paused = (lambda: contextlib.nullcontext()) if mode == "old" else real
        r = measure_interleaved(prog.as_module(), session.base, session.input_shape, "cpu", threads=1)
        rows.append((mode, r.reference_ms_now, r.ratio))
        print(mode, round(r.reference_ms_now, 3), round(r.ratio, 4), r.stop_reason, flush=True)
    # steady state: no export before
    timing.gc_paused = real
    r = measure_interleaved(prog.as_module(), session.base, session.input_shape, "cpu", threads=1)
    rows.append(("steady", r.reference_ms_now, r.ratio)); print("steady", round(r.reference_ms_now, 3), round(r.ratio, 4), flush=True)
for m in ("old", "new", "steady"):
    v = [x for x in rows if x[0] == m]
    print(m, "ref ms median", round(statistics.median(x[1] for x in v), 3), "ratio median", round(statistics.median(x[2] for x in v), 4))
