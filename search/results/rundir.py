"""The run directory of a study: resolved study file, Optuna storage, trial tables, log.

The Optuna study is the single source of truth: every trial's metrics, their sources,
feasibility, errors and the evaluation record live in its user attributes, and the
tables (``trials.parquet`` / ``trials.csv``) are re-derived from it, written atomically
(temp file + rename) whenever a trial finishes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.search.study import StudySpec, load_study, study_to_yaml
from vitsearch.spaces.errors import ConfigError

STUDY_FILE = "study.yaml"
META_FILE = "run.json"
DB_FILE = "optuna.db"
LOG_FILE = "run.log"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` through a temp file and an atomic rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


@dataclass
class RunDir:
    """Paths and metadata of one run directory."""

    path: Path

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    @property
    def meta_file(self) -> Path:
        return self.path / META_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    def default_storage_url(self) -> str:
        return f"sqlite:///{(self.path / DB_FILE).resolve()}"

    def is_run_dir(self) -> bool:
        return self.study_file.is_file() and self.meta_file.is_file()

    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_file.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_atomic(self.meta_file, json.dumps(meta, indent=2))

    def spec(self) -> StudySpec:
        return load_study(self.study_file)

    def create(self, spec: StudySpec, meta: dict[str, Any]) -> None:
        """Start a new run dir (the caller has validated everything first)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.study_file, study_to_yaml(spec))
        self.write_meta(meta)

    def check_resumable(self, spec: StudySpec | None) -> StudySpec:
        """The stored study; refuse a dir that is not a run dir or whose study differs."""
        if not self.is_run_dir():
            raise ConfigError(
                f"--resume: {str(self.path)!r} is not a vitsearch run dir (no {STUDY_FILE} and {META_FILE}); "
                "give a directory written by `vitsearch run`")
        stored = self.spec()
        if spec is not None and stored != spec:
            diff = first_difference(stored.model_dump(mode="json"), spec.model_dump(mode="json"))
            raise ConfigError(
                f"--resume: the study file differs from the one {str(self.path)!r} was started with "
                f"(first difference at {diff}); resume with the same study file or start a new run with --out")
        return stored


def first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where or '(top level)'}: {a!r} vs {b!r}"
