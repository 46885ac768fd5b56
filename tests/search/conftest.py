import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One small real run shared by the tests that read a finished run (report, pick, the screen, the re-timed
    sittings; those that write do so in their own sub-folder); its output is kept beside it (run.stdout,
    run.stderr)."""
    from clitools import make_run

    return make_run(tmp_path_factory.mktemp("small_run"))


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the scale-out tests: ``(url, root)``; root is None when not started here.

    VITSEARCH_TEST_PG_URL (set by .ci/run, which starts the server; VITSEARCH_TEST_PG_ROOT
    then names its dir for superuser SQL) is used when set; otherwise a server is started
    here from Debian's packages (tests/search/pgserver.py) and stopped at the end. When
    neither works the tests that need it are skipped, and the reason is printed.
    """
    import os
    import tempfile
    from pathlib import Path

    import pgserver

    url = os.environ.get("VITSEARCH_TEST_PG_URL")
    if url:
        root = os.environ.get("VITSEARCH_TEST_PG_ROOT")
        yield url, Path(root) if root else None
        return
    root = Path(tempfile.mkdtemp(prefix="vitsearch-pg-"))  # not under pytest's 0700 tmp: the server runs as postgres
    os.chmod(root, 0o755)
    try:
        url = pgserver.start(root / "server")
    except pgserver.Unavailable as exc:
        reason = f"PostgreSQL tests skipped: no server could be started ({exc})"
        print(f"\n{reason}")
        pytest.skip(reason)
    try:
        yield url, root / "server"
    finally:
        pgserver.stop(root / "server")
        root.rmdir()
