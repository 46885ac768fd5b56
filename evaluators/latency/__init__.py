"""How fast a model is, in rooms:

- :mod:`.timing`: the one pass timer, the one measurement context, and the protocols
  (burst, interleaved ratio to a reference, round-robin) with their plans and results;
- :mod:`.measure`: ``measure_latency`` / ``measure_repeatability``, the entry points;
- :mod:`.stats`: Wilson, z, the ratio's bootstrap interval, the sitting spread's widening;
- :mod:`.predict`: the predictor interface and its component and whole-model kinds;
- :mod:`.profile`: ``vitsearch profile`` (store, sampling, run, fit, refine, sitting,
  predictor-eval);
- :mod:`.fingerprint` (with :mod:`.nvml`) and :mod:`.lock`: which device, and one
  measurement on it at a time.
"""
