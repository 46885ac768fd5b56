import pytest


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """The test's tmp_path as the working directory (relative paths in a command land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
