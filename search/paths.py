"""Relative paths mean one thing everywhere: resolved once, on the driver, before any worker sees them.

The rule: a path written in a study file is relative to the folder of that study file;
a path given on the command line (``--out``, ``--resume``, ``--storage``) is relative
to the working directory. Both are made absolute when the study is loaded or the run
is planned, because Ray workers run in another working directory. Defaults that a
study file does not write (``output_dir: runs/{name}``, ``profiles/{name}``) are
relative to the working directory, like ``--out``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from vitsearch.search.study import StudySpec

#: latency.predictor values that are modes, not paths
PREDICTOR_MODES = ("auto", "off")


def absolute(path: str, base: Path) -> str:
    """``path`` (``~`` expanded) joined to ``base`` when relative; absolute paths are kept."""
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).absolute())


def absolute_storage_url(url: str, base: Path) -> str:
    """A storage URL whose file (``sqlite:///rel.db``, ``journal:rel.log``) is anchored at ``base``.

    Server URLs (PostgreSQL, MySQL) and in-memory SQLite are returned unchanged (the
    latter is refused later by ``open_storage`` with its own message).
    """
    if url.startswith("journal:"):
        rest = url.removeprefix("journal:").removeprefix("//")
        return f"journal:{absolute(rest, base)}" if rest else url
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        path, sep, query = rest.partition("?")
        if not path or path.startswith("/") or path == ":memory:":
            return url
        return f"sqlite:///{absolute(path, base)}{sep}{query}"
    return url


def resolve_study_paths(spec: "StudySpec", base: Path) -> "StudySpec":
    """The study with every relative path it writes anchored at ``base`` (the study file's folder)."""
    data = spec.model_dump(mode="python")
    if spec.data.path:
        data["data"]["path"] = absolute(spec.data.path, base)
    if spec.model.checkpoint:
        data["model"]["checkpoint"] = absolute(spec.model.checkpoint, base)
    if spec.latency.predictor not in PREDICTOR_MODES:
        data["latency"]["predictor"] = absolute(spec.latency.predictor, base)
    if spec.search.storage:
        data["search"]["storage"] = absolute_storage_url(spec.search.storage, base)
    if "output_dir" in spec.model_fields_set:
        data["output_dir"] = absolute(spec.output_dir, base)
    else:  # left unset: the default stays relative to the working directory
        del data["output_dir"]
    return type(spec).model_validate(data)
