"""Optuna storages for a study: SQLAlchemy URLs (SQLite in WAL mode, PostgreSQL) or a journal file.

Used by the engine (the run's storage) and by the results views (reading a finished run).

Passwords never reach the run dir: :func:`storable_url` drops the password from a URL
before it is written (run.json, study.yaml) and :func:`shown_url` masks it in messages.
A PostgreSQL password given in the URL is handed to libpq through ``PGPASSWORD`` of this
process instead of the URL, so that no object that may be pickled (Ray Tune pickles its
search algorithm) holds it; a resumed run reads it from ``PGPASSWORD`` or ``~/.pgpass``
again, or from ``--storage`` given again.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitsearch.search.studyfile import shown
from vitsearch.spaces.errors import ConfigError

#: seconds between a driver's heartbeats for the trials it owns (RDB storages)
HEARTBEAT_S = 2
#: a RUNNING trial whose owner has not beaten for this long is failed and asked again
GRACE_S = 20
#: the PostgreSQL driver SQLAlchemy uses for postgresql:// URLs (a dependency of vitsearch)
PG_DRIVER = "psycopg"
PG_INSTALL = "pip install 'psycopg[binary]'"
#: the first 16 bytes of every SQLite database file
SQLITE_HEADER = b"SQLite format 3\x00"


def _url(url: str):
    from sqlalchemy.engine import make_url

    try:
        return make_url(url)
    except Exception:
        return None


def shown_url(url: str) -> str:
    """``url`` with any password masked as ``***``, for messages and logs."""
    u = _url(url) if not url.startswith("journal:") else None
    return u.render_as_string(hide_password=True) if u is not None and u.password else url


def storable_url(url: str) -> str:
    """``url`` without its password, for files in the run dir (resume reads PGPASSWORD / .pgpass or --storage)."""
    u = _url(url) if not url.startswith("journal:") else None
    return u._replace(password=None).render_as_string(hide_password=False) if u is not None and u.password else url


def password_to_env(url: str) -> str:
    """A PostgreSQL URL's password moved into this process's PGPASSWORD; returns the URL without it.

    libpq (psycopg) reads PGPASSWORD, so the connection works as before, while the URL
    that the driver keeps - and Ray Tune pickles into the run dir with its search
    algorithm - holds no secret. The URL given wins over an exported PGPASSWORD, as in
    libpq. Other databases keep the password in the URL (it is still masked in files).
    """
    u = _url(url) if not url.startswith("journal:") else None
    if u is None or u.get_backend_name() != "postgresql" or not u.password:
        return url
    os.environ["PGPASSWORD"] = str(u.password)
    return u._replace(password=None).render_as_string(hide_password=False)


def _sqlalchemy_url(url: str) -> str:
    """The URL handed to SQLAlchemy: password to PGPASSWORD; plain postgresql:// -> the psycopg driver."""
    url = password_to_env(url)
    u = _url(url)
    if u is None or u.get_backend_name() != "postgresql":
        return url
    if u.get_driver_name() in ("", PG_DRIVER) and "+" not in u.drivername:
        u = u.set(drivername=f"postgresql+{PG_DRIVER}")  # SQLAlchemy 2.0 would pick psycopg2
    return u.render_as_string(hide_password=False)


def open_storage(url: str, on_stale=None):
    """An Optuna storage for ``url`` (SQLAlchemy URL or ``journal:<path>``); ConfigError if it cannot open.

    ``on_stale``: for the driver's storage: an RDB storage then records heartbeats, and
    Optuna calls ``on_stale(study, trial)`` for each trial whose owner stopped beating
    (:mod:`vitsearch.search.engine.ownership` beats and re-asks them).
    """
    import optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = str(journal_file(url))
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        if url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite://") or ":memory:" in url
                                         or "mode=memory" in url):
            raise ConfigError(f"storage: {url!r} is an in-memory database; a run needs storage that outlives "
                              "the driver (resume, report, pick): use sqlite:///PATH, postgresql://... or journal:PATH")
        db = sqlite_file(url)
        if db is not None and db.is_file() and db.stat().st_size:  # an empty file is a new database
            check_sqlite_file(db, "storage")
        storage = _rdb(_sqlalchemy_url(url), on_stale)
        if storage.engine.dialect.name == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(_why(url, exc)) from None


def journal_file(url: str) -> Path | None:
    """The log file of a ``journal:PATH`` URL (None for other URLs)."""
    return Path(url.removeprefix("journal:").removeprefix("//")) if url.startswith("journal:") else None


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (None for other URLs)."""
    u = _url(url)
    if u is None or u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def check_sqlite_file(path: Path, who: str) -> None:
    """ConfigError (one line, starting with ``who``) unless ``path`` is a readable, undamaged SQLite database.

    Checked read-only (SQLite's ``quick_check``) before Optuna opens it: a truncated or
    overwritten file must be refused, not half-read or silently replaced.
    """
    import sqlite3

    name = shown(str(path))
    fix = "restore it from a copy, or start a new run with --out"
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"{who}: cannot read the database {name} ({exc.strerror}); {fix}") from None
    if head != SQLITE_HEADER:
        what = "empty" if not head else "not an SQLite database (wrong header)"
        raise ConfigError(f"{who}: the database {name} is {what}; {fix}")
    try:
        con = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)  # no -wal/-shm made
        try:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict != "ok":
        raise ConfigError(f"{who}: the database {name} is damaged ({verdict[:120]}); {fix}")


#: attempts at opening an RDB storage whose schema another driver is creating at the same moment
SCHEMA_ATTEMPTS = 3


def _rdb(url: str, on_stale):
    """Optuna's RDBStorage on ``url``. Two drivers starting together on a new database both create Optuna's
    tables; the slower one's CREATE fails on what the other just made ("already exists"): it opens again,
    finding the tables in place."""
    import time
    import warnings

    import optuna
    import sqlalchemy.exc

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            if on_stale is None:
                return optuna.storages.RDBStorage(url, heartbeat_interval=None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                                  heartbeat_stale_trial_callback=on_stale)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


#: SQLAlchemy driver name -> the PyPI package that provides it, for the install hint
_PIP_NAMES = {"psycopg2": "psycopg2-binary", "mysqldb": "mysqlclient", "pymysql": "pymysql", "asyncpg": "asyncpg"}


def _why(url: str, exc: Exception) -> str:
    """One line: what failed opening ``url`` and what to do."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    shown = shown_url(url)
    if isinstance(exc, ImportError) or "Failed to import DB access module" in text:
        u = _url(url)
        driver = u.get_driver_name() if u is not None else "?"
        hint = PG_INSTALL if driver in ("psycopg", "") else f"pip install {_PIP_NAMES.get(driver, driver)}"
        return f"storage: no database driver for {shown!r} ({driver or 'default'} is not installed); {hint}"
    if "password authentication failed" in text or "no password supplied" in text:
        return (f"storage: PostgreSQL refused the password for {shown!r}; give it in the URL, PGPASSWORD "
                "or ~/.pgpass")
    if "permission denied" in text or "no schema has been selected to create in" in text:
        return (f"storage: {shown!r} does not let this user create Optuna's tables (permission denied); "
                "GRANT CREATE ON SCHEMA public to it, or use a database it owns")
    if "Connection refused" in text or "could not translate host name" in text or "timeout" in text.lower():
        return f"storage: no database server reachable at {shown!r} ({_first(text)}); start it or fix host/port"
    return f"storage: cannot open {shown!r} ({_first(text)}); use sqlite:///PATH, postgresql://USER@HOST/DB or journal:PATH"


def _first(text: str) -> str:
    text = text.split("(Background on this error")[0].strip()
    return text[:200]


def _sqlite_wal(engine) -> None:
    """Write-ahead log, fsync at checkpoints: cheaper Optuna trials on SQLite (docs/operations.md says how much).

    A committed tell survives
    the driver being killed (it is in the WAL file); only an OS crash or power loss can
    lose the last transactions. WAL also lets optuna-dashboard read while the run
    writes. Not for a database on a network file system (use PostgreSQL or journal:).
    """
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while Optuna created its tables get the pragmas too
