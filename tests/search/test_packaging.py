"""`pip install .` ships what `pip install -e .` sees: the three code folders, studies, weights."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_wheel_holds_packages_weights_and_studies(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = set(zipfile.ZipFile(next(tmp_path.glob("vitsearch-*.whl"))).namelist())
    for folder in ("search", "spaces", "evaluators"):
        local = {f"vitsearch/{folder}/{p.relative_to(ROOT / folder)}" for p in (ROOT / folder).rglob("*.py")}
        assert local <= names, sorted(local - names)[:5]
    assert "vitsearch/evaluators/weights/vitsearch_tiny.pt" in names
    assert {f"vitsearch/studies/{p.name}" for p in (ROOT / "studies").glob("*.yaml")} <= names
    assert not any(n.startswith("vitsearch/__init__") for n in names)  # vitsearch stays a namespace


def test_import_from_outside_the_repo(tmp_path):
    """From another folder (the repo root not on sys.path) the three folders import from the install."""
    out = subprocess.run([sys.executable, "-c", "import vitsearch.spaces, vitsearch.search, vitsearch.evaluators; "
                          "print(vitsearch.search.__file__)"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where = out.stdout.strip()
    assert Path(where).resolve().is_relative_to(ROOT / "search") or "site-packages" in where, where
    assert not Path(where).resolve().is_relative_to(tmp_path)
