"""How closely each variant follows its teacher on val: what ``pick --choose-by teacher`` ranks by.

Val top-1 moves by whole images (0.2 points each on 500 val images) and ranks variants by
the few images they differ on; the mean KL(teacher || variant) of their
softmaxes on the same val images (the teacher: the uncompressed model in fp32, the
direction of the distillation's KL term) moves continuously. On the 19 top-rung
candidates of two allocation runs it ordered the candidates' test top-1 better than val
top-1 did (pairs ordered as test orders them: 0.96 against 0.81 in ONNX Runtime, 0.88
against 0.78 in eager; ``benchmarks/choose_by.py``, docs/results.md).

Each variant is rebuilt at the rung it reached, built in the study's runtime (its own
quantisation included) and scored there against the teacher's val logits, as the
polish's checkpoints are (:meth:`vitsearch.evaluators.pipeline.Pipeline.score`).
"""

from __future__ import annotations

import json
import sys

import pandas as pd

#: ``pick``'s default: by how closely each variant follows the teacher on val
CHOOSE_BY = "teacher"


def check_choose_by(by: str) -> None:
    """ConfigError (exit 2) for a ``--choose-by`` that is not one of the two val figures the polish also selects by
    (:data:`~vitsearch.search.results.variant.POLISH_SELECTS`)."""
    from vitsearch.search.results.variant import POLISH_SELECTS
    from vitsearch.spaces.errors import ConfigError

    if by not in POLISH_SELECTS:
        raise ConfigError(f"--choose-by: {by!r} is not one of {', '.join(POLISH_SELECTS)}")


def teacher_kl(view, session, rows: pd.DataFrame, say=None) -> pd.Series:
    """Val mean KL(teacher || variant) of each row of ``rows`` (trial rows: ``number``, ``rung``, ``config``), in
    the study's runtime; a Series on ``rows``' index. ``say``: called with one progress line per variant. A KL
    that is not finite is refused (ModelError). The winner's val top-1 is checked against the recorded one at
    export; a variant whose rung checkpoint is missing is distilled again, and the replay of a barely trained
    one may differ from the search's by an image or two, so the others are not held to it.
    """
    import math

    from vitsearch.search.results.testacc import rebuild_prepared
    from vitsearch.spaces import CompressionConfig
    from vitsearch.spaces.errors import ModelError

    say = say or (lambda text: print(text, file=sys.stderr))
    pipe = session.pipeline
    out = {}
    for k, (index, row) in enumerate(rows.iterrows(), 1):
        number, rung = int(row["number"]), int(row["rung"])
        config = CompressionConfig.from_dict(json.loads(row["config"]))
        prepared = rebuild_prepared(session, config, rung, view.path, number, row.get("recovery_threads"))
        val = pipe.score(prepared, config, against_teacher=True)  # built in the study's runtime
        if not math.isfinite(val.reference_kl):
            raise ModelError(f"pick: trial {number}'s val outputs give a KL divergence from the teacher of "
                             f"{val.reference_kl}; choose with --choose-by top1")
        out[index] = val.reference_kl
        say(f"pick: trial {number} ({k}/{len(rows)}) follows the teacher on val at KL {val.reference_kl:.4f} "
            f"({val.top1:.2%} val top-1, in {pipe.runtime.name})")
    return pd.Series(out, dtype=float)
