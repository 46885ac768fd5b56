"""The tiny study: the built-in model on mnist5k, timed in a few short passes; tests derive theirs from it.

Importable from any test module (``from tinystudy import ...``): pytest puts ``tests/`` on
``sys.path`` when it loads ``tests/conftest.py``. The ``tiny_study`` fixture there writes one
into the test's ``tmp_path``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import yaml

#: name, latency timed in at most 10 passes or 0.3 s, accuracy in batches of 100; every other
#: field (model, data source, search) is the schema's default
TINY_STUDY = {
    "name": "t",
    "latency": {"batch_size": 1, "threads": 1, "warmup": 1, "max_runs": 10, "max_seconds": 0.3},
    "data": {"eval_batch_size": 100},
}


def tiny_study_dict(base: Mapping = TINY_STUDY, **overrides) -> dict:
    """A deep copy of ``base`` with ``overrides`` applied, section by section; ``base`` is left unchanged.

    A mapping is merged into the section of that name (its keys replace the section's, one
    level deep: ``latency={"interleave": {...}}`` replaces the whole ``interleave``); any other
    value replaces the section. ``None``, as a section or as a key of a merged mapping, leaves
    it out, so that the schema's default applies.
    """
    doc = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            section = doc.get(key)
            merged = {**(section if isinstance(section, Mapping) else {}), **value}
            value = {k: v for k, v in merged.items() if v is not None}
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = copy.deepcopy(value)
    return doc


def write_study(path: Path, base: Mapping = TINY_STUDY, **overrides) -> Path:
    """Write ``tiny_study_dict(base, **overrides)`` as YAML to ``path`` (parent folders made) and return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_study_dict(base, **overrides)))
    return path
