"""The installed packages provide the API the code relies on (the floors in pyproject.toml are true).

Each check names the newest API the code uses from a package; the floor in
pyproject.toml is the first release that has it.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def floors() -> dict[str, tuple[int, ...]]:
    import tomllib

    out = {}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([0-9.]+)(,<=[0-9.]+)?", dep)  # a floor, maybe a bound
        if m:
            out[m.group(1).lower()] = tuple(int(p) for p in m.group(3).split("."))
    return out


def test_floors_name_the_api_the_code_needs():
    f = floors()
    assert f["optuna"] >= (5, 0)  # Trial.set_constraint
    assert f["ray"] >= (2, 41)  # ray.tune.report / ray.tune.RunConfig
    assert f["sqlalchemy"] >= (2, 0) and f["psycopg"] >= (3, 1)  # SQLAlchemy's postgresql+psycopg dialect


@pytest.mark.parametrize("package, check", [
    ("optuna", lambda: __import__("optuna").trial.Trial.set_constraint),
    ("optuna", lambda: __import__("optuna").storages.RetryHeartbeatStaleTrialCallback),
    ("optuna", lambda: __import__("optuna").storages.fail_stale_trials),
    ("optuna", lambda: __import__("optuna.storages.journal", fromlist=["JournalFileBackend"]).JournalFileBackend),
    ("ray", lambda: (__import__("ray.tune", fromlist=["tune"]).report, __import__("ray.tune", fromlist=["x"]).RunConfig)),
    ("torchao", lambda: __import__("torchao.quantization", fromlist=["x"]).Int8DynamicActivationInt8WeightConfig),
    ("timm", lambda: __import__("timm.models.vision_transformer", fromlist=["x"]).VisionTransformer),
    ("sqlalchemy", lambda: __import__("sqlalchemy.dialects.postgresql.psycopg", fromlist=["x"]).dialect),
    ("psycopg", lambda: __import__("psycopg").connect),
])
def test_installed_versions_have_the_api(package, check):
    installed = tuple(int(p) for p in re.findall(r"\d+", version(package))[:2])
    assert installed >= floors().get(package, (0,))[:2], f"{package} {version(package)} is below its floor"
    assert check() is not None
