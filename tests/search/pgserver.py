"""A throw-away PostgreSQL server for the tests: Debian's binaries, loopback, its own data dir and port.

Used by the session fixture in ``tests/search/conftest.py`` and by ``.ci/run``::

    python tests/search/pgserver.py start DIR   # prints the postgresql:// URL of a fresh database
    python tests/search/pgserver.py stop DIR

The server listens on 127.0.0.1 only (and a Unix socket inside DIR), with password
authentication on TCP. Running as root, it runs as the ``postgres`` user (PostgreSQL
refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

USER = "vitsearch"
DATABASE = "vitsearch"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def bindir() -> Path:
    """The newest installed PostgreSQL server's bin dir (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise Unavailable("PostgreSQL's server is not installed (initdb not found); "
                      "install it with `apt-get install -y postgresql`")


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise Unavailable("running as root and `runuser` is missing: cannot start PostgreSQL as user postgres")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], **kw) -> str:
    out = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=120, **kw)
    if out.returncode != 0:
        raise Unavailable(f"{Path(cmd[0]).name} failed: {(out.stderr or out.stdout).strip()[-400:]}")
    return out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> str:
    """Start a server under ``root``; returns the URL (with password) of an empty database."""
    bins = bindir()
    root = root.resolve()
    data, sock = root / "data", root / "sock"
    sock.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        import pwd

        try:
            ids = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root and there is no `postgres` user to run the server as") from None
        for p in (root, sock, pwfile):
            os.chown(p, ids.pw_uid, ids.pw_gid)
    _run([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
          "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])
    port = _free_port()
    (root / "port").write_text(str(port))
    _run([str(bins / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
          f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
    psql = [str(bins / "psql"), "-h", str(sock), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
    _run([*psql, "-c", f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'"])
    _run([*psql, "-c", f"CREATE DATABASE {DATABASE} OWNER {USER}"])
    return f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"


def admin_sql(root: Path, sql: str, database: str = "postgres") -> str:
    """Run ``sql`` as the superuser over the server's Unix socket (tests: roles, databases)."""
    root = root.resolve()
    port = (root / "port").read_text().strip()
    return _run([str(bindir() / "psql"), "-h", str(root / "sock"), "-p", port, "-U", "postgres", "-d", database,
                 "-v", "ON_ERROR_STOP=1", "-q", "-t", "-c", sql])


def stop(root: Path) -> None:
    """Stop the server under ``root`` (fast shutdown) and remove its files."""
    root = root.resolve()
    if (root / "data" / "postmaster.pid").exists():
        subprocess.run(_as_owner([str(bindir() / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


def wait_ready(url: str, timeout: float = 30) -> None:
    """Block until the server answers on the URL's host and port."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection((u.host, u.port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise Unavailable(f"PostgreSQL at {u.host}:{u.port} did not come up in {timeout:.0f} s") from None
            time.sleep(0.2)


if __name__ == "__main__":
    action, where = sys.argv[1], Path(sys.argv[2])
    try:
        print(start(where) if action == "start" else stop(where) or "stopped")
    except Unavailable as exc:
        print(f"pgserver: {exc}", file=sys.stderr)
        sys.exit(1)
