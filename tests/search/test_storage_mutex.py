"""The study mutex: one holder at a time per study, whatever storage the study is in."""

import threading

import optuna
import pytest

from vitsearch.search.storage import open_storage, study_mutex


@pytest.mark.parametrize("kind", ["sqlite", "journal", "memory"])
def test_a_second_holder_of_the_same_study_waits_and_another_study_does_not(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path / "locks"))
    url = {"sqlite": f"sqlite:///{tmp_path / 's.db'}", "journal": f"journal:{tmp_path / 's.log'}"}.get(kind)
    storage = optuna.storages.InMemoryStorage() if url is None else open_storage(url)
    other = storage if url is None else open_storage(url)  # a second driver's own connection
    held, release = threading.Event(), threading.Event()

    def holder():
        with study_mutex(storage, "s"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(TimeoutError, match="'s'"):
            with study_mutex(other, "s", timeout_s=0.3):
                pass
        with study_mutex(other, "t", timeout_s=0.3):  # another study of the same storage is not held
            pass
    finally:
        release.set()
        thread.join()
    with study_mutex(other, "s", timeout_s=0.3):  # released with its holder
        pass
