"""Timing forward passes: one pass timer (:mod:`.timer`), one measurement context
(:mod:`.context`), and the protocols built on them - the burst (:mod:`.burst`), the
interleaved ratio to a reference (:mod:`.interleaved`) and the profile's round-robin
(:mod:`.roundrobin`) - with their plans (:mod:`.plans`) and results (:mod:`.results`)."""
