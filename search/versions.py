"""The installed dependencies against the versions the test suite last passed on.

``search/constraints.txt`` (shipped in the package) pins every package of the venv the
suite passed in; the README's install commands and ``.ci/run`` install with it, and
``pyproject.toml`` bounds the fast-moving dependencies at those pins. ``vitsearch doctor``
shows this table so a user sees at once whether they run what was tested.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from importlib import metadata, resources

#: The dependencies whose releases change behaviour most often: bounded above in pyproject.toml.
FAST_MOVING = ("torch", "optuna", "ray", "timm", "torchao", "onnxruntime")
#: What doctor lists: the fast-moving ones, then the rest vitsearch imports directly.
LISTED = FAST_MOVING + ("torchvision", "onnx", "onnxscript", "pydantic", "pandas", "numpy", "sqlalchemy",
                        "psycopg", "scikit-learn", "scipy", "mlxtend", "plotly", "matplotlib", "nvidia-ml-py")

SAME, DIFFERENT, MISSING, UNPINNED = "as tested", "not tested", "not installed", "not pinned"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_constraints(text: str) -> dict[str, str]:
    """``name==version`` lines of a constraints file, by canonical name (comments and blanks skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise ValueError(f"constraints line {line!r} is not `name==version`")
        pins[canonical(name.split("[")[0])] = version.strip()
    return pins


def constraints_path():
    """The constraints file shipped with this install of vitsearch."""
    return resources.files("vitsearch.search").joinpath("constraints.txt")


def tested_versions() -> dict[str, str]:
    """The pins shipped with this install of vitsearch."""
    return parse_constraints(constraints_path().read_text())


@dataclass(frozen=True)
class VersionRow:
    """One dependency: the version tested, the one installed, and how they compare."""

    name: str
    tested: str | None
    installed: str | None
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def compare(tested: dict[str, str], names=LISTED, installed=installed_version) -> list[VersionRow]:
    """A row per name: ``as tested``, ``not tested`` (another version), ``not installed`` or ``not pinned``."""
    rows = []
    for name in names:
        want, have = tested.get(canonical(name)), installed(name)
        if have is None:
            status = MISSING
        elif want is None:
            status = UNPINNED
        else:
            status = SAME if have.split("+")[0] == want.split("+")[0] else DIFFERENT
        rows.append(VersionRow(name, want, have, status))
    return rows


def render(rows: list[VersionRow]) -> str:
    """The table as text, with a closing line that says what to do about versions not tested."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'package':<{width}}  {'tested':<12}  {'installed':<12}  status"]
    lines += [f"{r.name:<{width}}  {r.tested or '-':<12}  {r.installed or '-':<12}  {r.status}" for r in rows]
    off = [r.name for r in rows if r.status in (DIFFERENT, MISSING)]
    lines.append(f"versions: {len(rows) - len(off)} of {len(rows)} as tested or unpinned"
                 + (f"; not as tested: {', '.join(off)} (`pip install -c {constraints_path()} vitsearch` "
                    "installs the tested set)" if off else ""))
    return "\n".join(lines)
