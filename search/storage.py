"""Optuna storages for a study: SQLAlchemy URLs (SQLite in WAL mode, PostgreSQL) or a journal file.

Used by the engine (the run's storage) and by the results views (reading a finished run).
"""

from __future__ import annotations

from vitsearch.spaces.errors import ConfigError


def open_storage(url: str):
    """An Optuna storage for ``url`` (SQLAlchemy URL or ``journal:<path>``); ConfigError if it cannot open."""
    import optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            path = url.removeprefix("journal:").removeprefix("//")
            return optuna.storages.JournalStorage(JournalFileBackend(path))
        if url.startswith("sqlite") and (url.rstrip("/") in ("sqlite:", "sqlite://") or ":memory:" in url
                                         or "mode=memory" in url):
            raise ConfigError(f"storage: {url!r} is an in-memory database; a run needs storage that outlives "
                              "the driver (resume, report, pick): use sqlite:///PATH, postgresql://... or journal:PATH")
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=None)
        if storage.engine.dialect.name == "sqlite":
            _sqlite_wal(storage.engine)
        return storage
    except ConfigError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"storage: cannot open {url!r} ({first}); use sqlite:///PATH, "
                          "postgresql://USER@HOST/DB or journal:PATH") from None


def _sqlite_wal(engine) -> None:
    """Write-ahead log, fsync at checkpoints: about 2.4x cheaper Optuna trials on SQLite.

    Measured here: ask (9 parameters) + 8 user attributes + a constraint + tell took
    50 ms per trial with SQLite's defaults, 21 ms with these. A committed tell survives
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
