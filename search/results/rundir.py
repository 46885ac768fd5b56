"""The run directory of a study: resolved study file, Optuna storage, trial tables, log.

The Optuna study is the single source of truth: every trial's metrics, their sources,
feasibility, errors and the evaluation record live in its user attributes, and the
tables (``trials.parquet`` / ``trials.csv``) are re-derived from it, written atomically
(temp file + rename) whenever a trial finishes.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.search.study import StudySpec, load_study, study_to_yaml
from vitsearch.spaces.errors import ConfigError

STUDY_FILE = "study.yaml"
META_FILE = "run.json"
DB_FILE = "optuna.db"
LOG_FILE = "run.log"
#: held (flock) by the one driver writing the run dir; the kernel drops it when that process dies
LOCK_FILE = ".driver.lock"


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

    def refuse_if_run(self) -> None:
        """ConfigError when this folder already holds a run (a new run must not mix with it)."""
        if self.is_run_dir():
            raise ConfigError(f"--out: {str(self.path)!r} already holds a run; continue it with --resume "
                              f"{self.path} or choose another --out")

    @contextmanager
    def locked(self, new: bool):
        """Hold the run dir for this driver (``flock``; released on exit, also by the kernel on SIGKILL).

        Another driver holding it is refused in one line before anything is written. A new
        run dir that never got its study file (the run failed before starting) is removed
        again, lock file included, so bad input leaves nothing behind.
        """
        import fcntl

        created = [p for p in (self.path, *self.path.parents) if not p.exists()]  # leaf first
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"run dir {str(self.path)!r} is in use by another vitsearch run (driver pid {holder}); "
                              "wait for it to end, or give another --out (drivers share a study through "
                              "--storage, not a run dir)") from None
        try:
            if new:  # another driver may have created it since the plan was checked
                self.refuse_if_run()
            # what the previous holder (now dead: it let go of the lock) recorded: pid, Ray session
            self.previous_holder = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
            self._lock_fd = fd
            self._write_lock([str(os.getpid())])
            yield self
        finally:
            self._lock_fd = None
            if created and not self.study_file.exists():
                (self.path / LOCK_FILE).unlink(missing_ok=True)  # before unlocking: no one can lock a stale inode
                for folder in created:
                    _remove_if_empty(folder)
            os.close(fd)

    def _write_lock(self, lines: list[str]) -> None:
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, ("\n".join(lines) + "\n").encode(), 0)

    def note_ray_session(self, session: str | None) -> None:
        """Record the local Ray session of this driver in the lock file (reaped if the driver is killed)."""
        if getattr(self, "_lock_fd", None) is not None and session:
            self._write_lock([str(os.getpid()), session])

    def previous_ray_session(self) -> str | None:
        """The Ray session folder the last driver of this run dir recorded (it is dead: we hold the lock)."""
        prev = getattr(self, "previous_holder", None) or []
        return prev[1] if len(prev) > 1 and prev[1].strip() else None

    def check_resumable(self, spec: StudySpec | None) -> StudySpec:
        """The stored study; refuse a dir that is not a run dir or whose study differs."""
        if not self.is_run_dir():
            raise ConfigError(
                f"--resume: {str(self.path)!r} is not a vitsearch run dir (no {STUDY_FILE} and {META_FILE}); "
                "give a directory written by `vitsearch run`")
        stored = self.spec()
        # output_dir does not matter once the run dir is named (and is anchored differently in study.yaml)
        a, b = (s.model_dump(mode="json", exclude={"output_dir"}) for s in (stored, spec or stored))
        if a != b:
            diff = first_difference(a, b)
            raise ConfigError(
                f"--resume: the study file differs from the one {str(self.path)!r} was started with "
                f"(first difference at {diff}); resume with the same study file or start a new run with --out")
        return stored


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: something else lives there


def first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return f"{where or '(top level)'}: {a!r} vs {b!r}"
