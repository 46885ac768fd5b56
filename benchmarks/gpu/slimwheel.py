"""Repack a wheel without some of its folders (ray's Java jars, RLlib, Serve, ...), in place.

    python slimwheel.py WHEEL PREFIX [PREFIX ...]

Entries under each PREFIX are left out and their lines dropped from ``*.dist-info/RECORD``,
so the wheel stays consistent for ``pip install``. Used by wheels.sh to make ray fit one
device call's carry (64 MiB); prints the size before and after.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path


def slim(wheel: Path, prefixes: tuple[str, ...]) -> tuple[int, int]:
    """Rewrite ``wheel`` without entries under ``prefixes``; returns (bytes before, bytes after)."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".slim.tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(prefixes)).encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, wheel)
    return before, wheel.stat().st_size


def main(argv: list[str]) -> int:
    """Command line: WHEEL PREFIX..."""
    if len(argv) < 2 or not argv[0].endswith(".whl"):
        print("usage: slimwheel.py WHEEL PREFIX [PREFIX ...]", file=sys.stderr)
        return 2
    before, after = slim(Path(argv[0]), tuple(argv[1:]))
    print(f"slimwheel: {Path(argv[0]).name}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
          f"(without {', '.join(argv[1:])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
