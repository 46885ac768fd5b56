"""The study's mutex: a compare-and-set of a study attribute among the drivers of one study.

Optuna writes a study attribute as an upsert; a driver that must act only when no other
driver has (mark a promotion it will run) reads and writes under :func:`study_mutex`.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vitsearch.search.engine.optuna_access import journal_file, rdb_of
from vitsearch.search.storage import shown_url, sqlite_file
from vitsearch.search.studyfile import shown
from vitsearch.spaces.errors import ConfigError

#: how long a driver waits for another driver's read-then-write of the study's attributes (held for milliseconds;
#: longer means its holder is stopped, and the caller tries again later)
MUTEX_TIMEOUT_S = 10.0
#: the file lock beside an SQLite database or a journal file: ``<file>`` + this
MUTEX_SUFFIX = ".vitsearch.lock"
#: process locks of in-memory studies (tests, in-process benchmarks), per storage object and study name
_MEMORY_LOCKS: "weakref.WeakKeyDictionary[object, dict[str, threading.Lock]]" = weakref.WeakKeyDictionary()
_MEMORY_GUARD = threading.Lock()


@contextmanager
def study_mutex(storage, study_name: str, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the study's mutex for a read-then-write of its attributes (a compare-and-set).

    Optuna writes a study attribute as an upsert, so two drivers that both read "not set"
    before either writes would both act on it. Every driver of the study takes this
    mutex around such a read and write: on PostgreSQL a transaction-level advisory lock
    of the study's (drivers on every machine that shares the server); for an SQLite
    database or a journal file a file lock beside it (``<file>.vitsearch.lock``, created
    with the file's permissions, for all the studies in that file: whoever shares the
    file shares the lock, whatever its temporary directory or the path it mounts the file
    at); for another database server a file lock in the lock dir named after its URL
    (drivers on this machine); for an in-memory study a process lock. Released when the
    block exits, or by the server or the OS when its holder dies. Not re-entrant.
    :class:`TimeoutError` when not acquired within ``timeout_s`` (default
    :data:`MUTEX_TIMEOUT_S`); :class:`ConfigError` when the lock file cannot be made.
    """
    timeout_s = MUTEX_TIMEOUT_S if timeout_s is None else timeout_s
    rdb, journal = rdb_of(storage), journal_file(storage)
    if rdb is not None and rdb.engine.dialect.name == "postgresql":
        with _advisory_lock(rdb.engine, study_name, timeout_s):
            yield
        return
    if rdb is not None or journal is not None:
        with _file_lock(_lock_file(rdb, journal), study_name, timeout_s):
            yield
        return
    with _MEMORY_GUARD:
        lock = _MEMORY_LOCKS.setdefault(storage, {}).setdefault(study_name, threading.Lock())
    if not lock.acquire(timeout=timeout_s):
        raise TimeoutError(f"study {study_name!r}: another thread held its mutex for {timeout_s:g} s")
    try:
        yield
    finally:
        lock.release()


def _lock_file(rdb, journal: Path | None) -> tuple[Path, int]:
    """(the mutex's lock file, its permission bits) for an RDB storage that is not PostgreSQL, or a journal file."""
    where = journal if journal is not None else sqlite_file(rdb.url)
    if where is not None:
        mode = where.stat().st_mode & 0o666 if where.exists() else 0o644
        return Path(f"{where}{MUTEX_SUFFIX}"), mode
    from vitsearch.evaluators.latency.lock import lock_dir  # imports torch: only for servers other than PostgreSQL

    digest = hashlib.sha256(shown_url(rdb.url).encode()).hexdigest()[:16]
    return lock_dir() / f"study-db-{digest}.lock", 0o644


@contextmanager
def _file_lock(place: tuple[Path, int], study_name: str, timeout_s: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path, mode = place
    lock = FileLock(str(path), mode=mode)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise TimeoutError(f"study {study_name!r}: another driver held {shown(str(path))} for {timeout_s:g} s") \
            from None
    except OSError as exc:
        raise ConfigError(f"storage: cannot lock the study's mutex file {shown(str(path))} ({exc.strerror or exc}); "
                          "every driver of the study must be able to write beside its database") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _advisory_lock(engine, study_name: str, timeout_s: float) -> Iterator[None]:
    """A PostgreSQL advisory lock of this study's, held for one transaction (the server drops it with the connection)."""
    import sqlalchemy

    digest = hashlib.sha256(f"vitsearch study\0{study_name}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with engine.connect() as conn, conn.begin():  # the lock ends with this transaction, however the block exits
        conn.execute(sqlalchemy.text(f"SET LOCAL lock_timeout = {max(1, int(1000 * timeout_s))}"))
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        except sqlalchemy.exc.OperationalError as exc:
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)  # psycopg 3, psycopg2
            if code != "55P03":  # lock_not_available
                raise
            raise TimeoutError(f"study {study_name!r}: another driver held its advisory lock for {timeout_s:g} s") \
                from None
        yield
