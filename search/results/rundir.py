"""The run directory of a study: resolved study file, Optuna storage, trial tables, log.

The Optuna study is the single source of truth: every trial's metrics, their sources,
feasibility, errors and the evaluation record live in its user attributes, and the
tables (``trials.parquet`` / ``trials.csv``) are re-derived from it, written atomically
(temp file + rename) whenever a trial finishes.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsearch.search.storage import check_sqlite_file
from vitsearch.search.study import StudySpec, load_study, parse_study, study_to_yaml
from vitsearch.search.studyfile import shown
from vitsearch.spaces.errors import ConfigError

STUDY_FILE = "study.yaml"
META_FILE = "run.json"
DB_FILE = "optuna.db"
LOG_FILE = "run.log"
#: held (flock) by the one driver writing the run dir; the kernel drops it when that process dies
LOCK_FILE = ".driver.lock"
#: run.json's storage when it is the run dir's own SQLite file: relative, so a moved or copied run dir uses its own
OWN_STORAGE = f"sqlite:///{DB_FILE}"


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
        try:
            return self.study_file.is_file() and self.meta_file.is_file()
        except OSError:  # a name too long, a loop of links: not a run dir
            return False

    def meta(self) -> dict[str, Any]:
        """run.json, its ``storage`` resolved: the run dir's own SQLite file is the one in *this* folder
        (also for a run.json that recorded it as an absolute path, before the run dir was copied).

        A damaged run.json is refused in one line.
        """
        try:
            meta = json.loads(self.meta_file.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(f"run dir {shown(str(self.path))}: {META_FILE} is damaged ({_reason(exc)}); restore it "
                              "from a copy of the run dir, or start a new run with --out") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"run dir {shown(str(self.path))}: {META_FILE} holds a {type(meta).__name__}, not a JSON "
                              "object; restore it from a copy of the run dir, or start a new run with --out")
        if meta.get("storage") == OWN_STORAGE or self._copied_own_storage(meta.get("storage")):
            meta["storage"] = self.default_storage_url()
        return meta

    def _copied_own_storage(self, url: str | None) -> bool:
        """A run.json written before storages were relative, in a copied or moved run dir: its absolute URL names
        the optuna.db of the folder it was copied from, while this folder holds its own."""
        if not url or not url.startswith("sqlite:////") or "?" in url:
            return False
        stored = Path(url.removeprefix("sqlite:///"))
        return stored.name == DB_FILE and stored.parent != self.path.resolve() and (self.path / DB_FILE).is_file()

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Write run.json; the run dir's own storage is written relative to it (:data:`OWN_STORAGE`)."""
        if meta.get("storage") == self.default_storage_url():
            meta = {**meta, "storage": OWN_STORAGE}
        write_atomic(self.meta_file, json.dumps(meta, indent=2))

    def spec(self) -> StudySpec:
        return load_study(self.study_file)

    def create(self, spec: StudySpec, meta: dict[str, Any]) -> None:
        """Start a new run dir (the caller has validated everything first)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.study_file, study_to_yaml(spec))
        self.write_meta(meta)

    def refuse_if_run(self) -> None:
        """ConfigError when this folder already holds a run or other files (a new run must not mix with them).

        A link is followed: what counts is the folder it names. An empty folder (or one
        holding only the driver's lock file) is fine.
        """
        if self.is_run_dir():
            raise ConfigError(f"--out: {shown(str(self.path))} already holds a run; continue it with --resume "
                              f"{shown(str(self.path))} or choose another --out")
        if self.path.is_dir():
            others = [p.name for p in self.path.iterdir() if p.name != LOCK_FILE]
            if others:
                link = f" (a link to {shown(str(self.path.resolve()))})" if self.path.is_symlink() else ""
                raise ConfigError(f"--out: {shown(str(self.path))}{link} is an existing folder holding "
                                  f"{len(others)} other file(s) or folder(s), e.g. {shown(sorted(others)[0])}; a run "
                                  "is written into a new or empty folder: give another --out")

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
                f"--resume: {shown(str(self.path))} is not a vitsearch run dir (no {STUDY_FILE} and {META_FILE}); "
                "give a directory written by `vitsearch run`")
        self._check_own_storage()
        stored = self.spec()
        # output_dir does not matter once the run dir is named (and is anchored differently in study.yaml)
        a, b = (s.model_dump(mode="json", exclude={"output_dir"}) for s in (stored, spec or stored))
        if a != b:
            hint = default_hint(a, b, "the run was started with", "to resume")
            own = shown(str(self.study_file))
            raise ConfigError(
                f"--resume: the study file differs from the one {str(self.path)!r} was started with "
                f"(first difference at {first_difference(a, b)}){hint or '; resume with the same study file'} "
                f"(the run's own copy: {own}), or start a new run with --out")
        return stored

    def _check_own_storage(self) -> None:
        """The run's SQLite file, when it is the run dir's own, is there and is an SQLite database."""
        if self.meta().get("storage") != self.default_storage_url():
            return
        db = self.path / DB_FILE
        if not db.is_file():
            raise ConfigError(f"--resume: {shown(str(self.path))} holds no {DB_FILE} (the run's trials); nothing to "
                              "resume: start a new run with --out")
        check_sqlite_file(db, f"--resume: {shown(str(self.path))}")


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: something else lives there


def difference_at(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """The dotted key where two nested dicts first differ, and the two values there (:data:`_MISSING` for a key
    one of them lacks)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key, _MISSING) != b.get(key, _MISSING):
                return difference_at(a.get(key, _MISSING), b.get(key, _MISSING), f"{where}.{key}" if where else key)
    return where, a, b


def first_difference(a: Any, b: Any) -> str:
    where, a, b = difference_at(a, b)
    shown_ = ["(not set)" if v is _MISSING else repr(v) for v in (a, b)]
    return f"{where or '(top level)'}: {shown_[0]} vs {shown_[1]}"


def default_hint(stored: dict, mine: dict, started: str, to: str) -> str:
    """Where two study dumps differ at one key only, whose value here is this vitsearch's default: the setting to
    write (an older vitsearch's default, or a value written, made ``stored``); else ''."""
    where, theirs, ours = difference_at(stored, mine)
    if not where or where.split(".")[0] == "device" or theirs is _MISSING or default_at(where) != ours:
        return ""
    if _with(mine, where, theirs) != stored:
        return ""  # more than this one difference: the line would not be enough
    *parents, key = where.split(".")
    under = f" under `{'.'.join(parents)}:`" if parents else ""
    return (f"; {where} is {json.dumps(ours)} here, this vitsearch's default, and {started} {json.dumps(theirs)} "
            f"(an older default, or written so): set `{key}: {json.dumps(theirs)}`{under} in the study file {to}")


#: a key one study dump has and the other has not
_MISSING = object()


def _with(doc: dict, where: str, value: Any) -> dict:
    """A copy of the nested ``doc`` with the dotted key ``where`` set to ``value``."""
    out = copy.deepcopy(doc)
    node = out
    *parents, key = where.split(".")
    for part in parents:
        node = node[part]
    node[key] = value
    return out


def default_at(where: str) -> Any:
    """The value a study that writes nothing has at the dotted key ``where`` (None where it has none)."""
    node: Any = parse_study({}).model_dump(mode="json")
    for key in where.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node
