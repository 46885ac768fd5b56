"""The rung book in the storage: who issued a promotion decides whether another driver runs it again.

Two drivers of one study are two Promotions objects on one Optuna study; which of them
is alive is told through ``alive`` (the real one reads /proc for drivers on this machine).
"""

import json

import optuna
import pytest

from vitsearch.search.engine.promotions import Promotions
from vitsearch.search.engine.rungs import Ladder
from vitsearch.search.results.tables import STUDY_PROMOTED

KEYS = [json.dumps({"depth": {"keep": k}}) for k in (6, 7)]
A, B, REMOTE = "host-1:100:1", "host-1:200:1", "host-2:300:1"


def _book(study, me, alive):
    book = Promotions(study, Ladder((10, 50), 2.0, (True, False)), (True, False), me=me, alive=alive.get)
    for number, key in enumerate(KEYS):  # two first-rung results: the quota promotes one of them
        book.remember_first(number, key, {"accuracy": 0.9 + number / 100}, [0.9 + number / 100, 5.0 - number])
    return book


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def test_a_promotion_of_a_live_driver_on_this_machine_is_left_to_it(study):
    alive = {A: True, B: True}
    job = _book(study, A, alive).take("tune-a")
    assert job["rung"] == 1 and study.user_attrs[f"{STUDY_PROMOTED}:{job['number']}:1"]["driver"] == A
    b = _book(study, B, alive)  # B starts beside the live A: nothing is lost, nothing to run
    assert b.due() is None and b.take("tune-b") is None
    alive[A] = False  # A dies without a result: now it is B's to run
    again = b.take("tune-b")
    assert (again["number"], again["rung"]) == (job["number"], 1)


def test_a_result_written_before_its_driver_ended_is_read_not_run_again(study):
    alive = {A: True, B: True}
    a = _book(study, A, alive)
    job = a.take("tune-a")
    b = _book(study, B, alive)
    payload = {"number": job["number"], "rung": 1, "evaluation": {"accuracy": 0.95}, "feasible": True,
               "constraints": [-0.01]}
    assert not a.result("tune-a", payload, lambda m: [m["accuracy"], 4.0]).failed
    alive[A] = False  # A finished and exited
    assert b.due() is None  # B read A's record instead of running the promotion again
    assert b.ladder.results[1] == {job["number"]: (0.95, 4.0)}


def test_an_issuer_on_another_machine_found_at_start_is_run_again(study):
    alive = {REMOTE: None, B: True}  # its life cannot be seen from here: run again (at worst twice)
    job = _book(study, REMOTE, {REMOTE: True}).take("tune-r")
    assert (_book(study, B, alive).take("tune-b")["number"], 1) == (job["number"], 1)


def test_a_promotion_another_driver_issued_while_this_one_ran_is_trusted(study):
    alive = {REMOTE: None, B: True}
    b = _book(study, B, alive)  # B runs first; the remote driver then issues the due promotion
    remote = _book(study, REMOTE, {REMOTE: True, B: True})
    remote.take("tune-r")
    assert b.take("tune-b") is None  # found issued at issue time: its issuer was alive, left to it


# ---- the mark is a compare-and-set: two drivers finding the same promotion at the same moment ----------------
def _racing_books(url, study_name, monkeypatch, tmp_path, issued_by=None):
    """Two live drivers (A, B) of one study in ``url``, each with its own storage connection, whose mark
    writes wait 0.3 s after their read: without the study's mutex both would read "unmarked" and both run."""
    import time

    from vitsearch.search.storage import open_storage

    monkeypatch.setenv("VITSEARCH_LOCK_DIR", str(tmp_path / "locks"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(directions=["maximize", "minimize"], storage=open_storage(url), study_name=study_name)
    alive = {A: True, B: True, REMOTE: False}
    if issued_by is not None:  # a driver, now dead, issued the due promotion and left no result
        _book(optuna.load_study(study_name=study_name, storage=open_storage(url)), issued_by, alive).take("tune-x")
    books = []
    for me in (A, B):
        study = optuna.load_study(study_name=study_name, storage=open_storage(url))
        write = study.set_user_attr

        def slow_write(key, value, write=write):
            time.sleep(0.3)
            write(key, value)

        study.set_user_attr = slow_write
        books.append(_book(study, me, alive))
    return books


def _race(books):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        jobs = list(pool.map(lambda b: b[1].take(f"tune-{b[0]}"), enumerate(books)))
    return [(j["number"], j["rung"]) for j in jobs if j is not None]


def test_two_drivers_on_sqlite_never_issue_the_same_promotion(monkeypatch, tmp_path):
    books = _racing_books(f"sqlite:///{tmp_path / 'study.db'}", "race", monkeypatch, tmp_path)
    taken = _race(books)
    assert len(taken) == 1  # one marked and runs it; the other found the mark and leaves it to that live driver
    assert all(b.due() is None for b in books)


def test_two_drivers_never_both_rerun_a_dead_drivers_promotion(monkeypatch, tmp_path):
    books = _racing_books(f"sqlite:///{tmp_path / 'study.db'}", "lost", monkeypatch, tmp_path, issued_by=REMOTE)
    taken = _race(books)
    assert len(taken) == 1 and taken[0][1] == 1
    study = books[0].study
    owner = study.user_attrs[f"{STUDY_PROMOTED}:{taken[0][0]}:1"]["driver"]
    assert owner in (A, B) and all(b.due() is None for b in books)  # the other leaves it to the live claimant


def test_two_drivers_on_postgres_never_issue_the_same_promotion(postgres, monkeypatch, tmp_path):
    url, _ = postgres
    books = _racing_books(url, f"race-{tmp_path.name}", monkeypatch, tmp_path)
    assert len(_race(books)) == 1


def test_a_mutex_not_acquired_in_time_claims_nothing_and_the_promotion_is_tried_again(monkeypatch, tmp_path,
                                                                                       caplog):
    import logging
    import time

    import vitsearch.search.engine.mutex as mutex_module
    from vitsearch.search.engine.mutex import study_mutex
    from vitsearch.search.storage import open_storage

    monkeypatch.setattr(mutex_module, "MUTEX_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=open_storage(url), study_name="slow")
    book = _book(study, A, {A: True})
    for number, key in enumerate(KEYS * 2):  # more due promotions: a stalled claim must not wait for each
        book.remember_first(number + 2, key, {"accuracy": 0.8}, [0.8, 6.0 - number])
    with caplog.at_level(logging.WARNING, logger="vitsearch.run"):
        with study_mutex(open_storage(url), "slow"):  # another driver holds the study's mutex (a stopped one)
            t0 = time.monotonic()
            assert book.take("tune-a") is None and book.take("tune-a") is None
            assert time.monotonic() - t0 < 4 * 0.2  # one timeout per take, not one per due promotion
    assert caplog.text.count("promotions wait until it is free") == 1
    job = book.take("tune-a")  # issued but unmarked: claimed as lost once the mutex is free
    assert job is not None and job["rung"] == 1
    assert study.user_attrs[f"{STUDY_PROMOTED}:{job['number']}:1"]["driver"] == A
