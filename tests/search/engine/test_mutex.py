"""The study mutex: one holder at a time per study, whatever storage the study is in."""

import threading

import optuna
import pytest

from vitsearch.search.engine.mutex import MUTEX_SUFFIX, study_mutex
from vitsearch.search.storage import open_storage


def _storages(kind, tmp_path, request):
    """Two handles on one storage (two drivers' own connections), and a handle on another storage."""
    if kind == "memory":
        one = optuna.storages.InMemoryStorage()
        return one, one, optuna.storages.InMemoryStorage()
    if kind == "postgres":
        url, _ = request.getfixturevalue("postgres")
        return open_storage(url), open_storage(url), None
    def url(name):
        return f"sqlite:///{tmp_path / name}.db" if kind == "sqlite" else f"journal:{tmp_path / name}.log"

    return open_storage(url("s")), open_storage(url("s")), open_storage(url("t"))


@pytest.mark.parametrize("kind", ["sqlite", "journal", "memory", "postgres"])
def test_a_second_holder_waits_until_the_first_leaves_even_by_an_exception(kind, tmp_path, request):
    storage, other, elsewhere = _storages(kind, tmp_path, request)
    study = f"s-{tmp_path.name}"
    held, release = threading.Event(), threading.Event()

    def holder():
        with pytest.raises(RuntimeError), study_mutex(storage, study):
            held.set()
            release.wait(10)
            raise RuntimeError("the holder fails inside the mutex")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(TimeoutError, match=repr(study)):
            with study_mutex(other, study, timeout_s=0.3):
                pass
        if kind in ("memory", "postgres"):  # another study of the same storage is not held
            with study_mutex(other, f"t-{tmp_path.name}", timeout_s=0.3):
                pass
        if elsewhere is not None:  # nor the same study in another storage
            with study_mutex(elsewhere, study, timeout_s=0.3):
                pass
    finally:
        release.set()
        thread.join()
    with study_mutex(other, study, timeout_s=0.3):  # released with its holder's exception
        pass
    if kind in ("sqlite", "journal"):  # the lock lives beside the file, so whoever shares the file shares it
        assert (tmp_path / f"s.{'db' if kind == 'sqlite' else 'log'}{MUTEX_SUFFIX}").exists()


def test_a_mutex_file_that_cannot_be_made_is_one_clear_error(tmp_path):
    from vitsearch.spaces.errors import ConfigError

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    (tmp_path / f"s.db{MUTEX_SUFFIX}").mkdir()  # in the way: a folder where the lock file goes
    with pytest.raises(ConfigError, match=r"cannot lock the study's mutex file .*s\.db\.vitsearch\.lock"):
        with study_mutex(storage, "s", timeout_s=0.3):
            pass
