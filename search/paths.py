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
from typing import Any

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


def resolve_written_paths(data: dict[str, Any], output_dir_written: bool, base: Path) -> dict[str, Any]:
    """A study document (``StudySpec.model_dump()``) with every relative path it writes anchored at ``base``.

    ``base`` is the study file's folder. ``output_dir`` is anchored only when the file
    wrote it (``output_dir_written``); the default stays relative to the working directory.
    """
    data = {**data, "data": {**data["data"]}, "model": {**data["model"]}, "latency": {**data["latency"]},
            "search": {**data["search"]}}
    if data["data"]["path"]:
        data["data"]["path"] = absolute(data["data"]["path"], base)
    if data["model"]["checkpoint"]:
        data["model"]["checkpoint"] = absolute(data["model"]["checkpoint"], base)
    if data["latency"]["predictor"] not in PREDICTOR_MODES:
        data["latency"]["predictor"] = absolute(data["latency"]["predictor"], base)
    if data["search"]["storage"]:
        data["search"]["storage"] = absolute_storage_url(data["search"]["storage"], base)
    if output_dir_written:
        data["output_dir"] = absolute(data["output_dir"], base)
    else:
        del data["output_dir"]
    return data
