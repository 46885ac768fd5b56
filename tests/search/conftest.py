import pytest


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One small real run shared by the report and pick tests (each writes its own sub-folder)."""
    from clitools import make_run

    return make_run(tmp_path_factory.mktemp("small_run"))
