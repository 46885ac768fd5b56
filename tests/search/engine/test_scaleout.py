"""Scale-out for real: a PostgreSQL study shared by two drivers, one SIGKILLed and resumed
beside the other; secrets kept out of the run dir; bad storage input refused in one line;
a multi-node Ray cluster losing a node. Trial ownership and sharing on one storage:
test_ownership.py.

The PostgreSQL tests use the ``postgres`` fixture (tests/search/conftest.py): a real
server started from Debian's packages (or the one .ci/run started); without one they are
skipped with the reason printed.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from clitools import SMALL_STUDY, vitsearch, wait_for_port
from optuna.trial import TrialState
from tinystudy import tiny_study_dict, write_study

#: the cheapest real study: built-in model, latency timed in a few passes (interleaved: clitools' short
#: protocol), no recovery
STUDY = tiny_study_dict(name="shared", latency={"max_runs": 20, "max_seconds": 0.1, "predictor": "off",
                                                "interleave": SMALL_STUDY["latency"]["interleave"]},
                        data={"eval_batch_size": 500, "calibration_size": 32},
                        constraints={"max_accuracy_drop": 0.05},
                        search={"trials": 10, "workers": 1, "cpus": 1, "seed": 0, "batch_size": 1, "sampler": "random"})


@functools.lru_cache(maxsize=None)
def _storage(url: str):
    """One storage (one connection pool) per URL for the test's own reads: polling with a new storage each
    time leaked a pool per poll and exhausted the server's 100 connections while a driver started."""
    from vitsearch.search.storage import open_storage

    return open_storage(url)


def load(url: str, name: str = "shared") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(url))


def count(url: str, state: str, name: str = "shared") -> int:
    try:
        return sum(t.state.name == state for t in load(url, name).get_trials(deepcopy=False))
    except Exception:  # not created yet
        return 0


def owns_running(url: str, name: str, pid: int) -> bool:
    """Whether the driver with ``pid`` owns a RUNNING trial of the study."""
    try:
        running = load(url, name).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:
        return False
    return any(t.user_attrs.get("driver", "").split(":")[1:2] == [str(pid)] for t in running)


def asked_by(url: str, name: str, pid: int) -> bool:
    """Whether the driver with ``pid`` has asked a trial of the study (any state)."""
    try:
        trials = load(url, name).get_trials(deepcopy=False)
    except Exception:
        return False
    return any(t.user_attrs.get("driver", "").split(":")[1:2] == [str(pid)] for t in trials)


def start_driver(study: Path, out: Path, url: str) -> subprocess.Popen:
    """A driver in a process group of its own (its local Ray processes with it)."""
    log = open(out.parent / f"{out.name}.stderr", "w")
    return subprocess.Popen([sys.executable, "-m", "vitsearch.search.cli", "run", str(study), "--out", str(out),
                             "--storage", url], stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
                            env={**os.environ, **own_lock(out.parent)})


def own_lock(root: Path) -> dict:
    """This test's drivers share one device lock, not the machine's (other test runs measure there too)."""
    return {"VITSEARCH_LOCK_DIR": str(root / "locks")}


def check_invariants(study: optuna.Study, target: int) -> None:
    """Exactly ``target`` evaluated (COMPLETE, not a reuse: what ``--trials`` counts), each reuse a copy of an
    evaluated trial of its config, no config evaluated twice, nothing left RUNNING or WAITING.

    A reuse is a COMPLETE trial too: two drivers starting together on a new study may both
    enqueue the uncompressed model, and the copy asked after the first completed reuses it.
    """
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    detail = "\n".join(f"{t.number} {t.state.name} driver={t.user_attrs.get('driver')} "
                        f"reused={t.user_attrs.get('reused_from')} retry_of={t.system_attrs.get('failed_trial')} "
                        f"settled={t.user_attrs.get('settled')} error={t.user_attrs.get('error')} "
                        f"config={t.user_attrs.get('config')}" for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    evaluated = [t for t in complete if t.user_attrs.get("reused_from") is None]
    assert len(evaluated) == target, detail
    by_number = {t.number: t for t in trials}
    for t in complete:
        if t.user_attrs.get("reused_from") is not None:
            source = by_number[t.user_attrs["reused_from"]]
            assert source.state == TrialState.COMPLETE and source.user_attrs.get("reused_from") is None, detail
            assert source.user_attrs["config"] == t.user_attrs["config"], detail
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, detail
    keys = [t.user_attrs["config"] for t in evaluated if t.user_attrs.get("eval_seconds") is not None]
    assert len(keys) == len(set(keys)), "a config was evaluated twice\n" + detail


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 3 min on a quiet 2-core machine; 8-17 min seen at load average 10-15
def test_two_drivers_on_postgres_one_killed_and_resumed_beside_the_other(postgres, tmp_path):
    url, _ = postgres
    from sqlalchemy.engine import make_url

    password = make_url(url).password
    name = f"two{os.getpid()}"
    study = write_study(tmp_path / "study.yaml", STUDY, name=name)
    a = start_driver(study, tmp_path / "a", url)
    b = start_driver(study, tmp_path / "b", url)
    try:
        deadline = time.time() + 400
        # kill A while it owns a RUNNING trial (so that there is something to ask again)
        while not (count(url, "COMPLETE", name) >= 2 and owns_running(url, name, a.pid)) \
                and time.time() < deadline and a.poll() is None:
            time.sleep(0.5)
        assert a.poll() is None, (tmp_path / "a.stderr").read_text()[-2000:]
        os.killpg(a.pid, signal.SIGKILL)  # driver A and its Ray, mid-run
        a.wait()
        # A is resumed beside the still running B; the password is not in A's run dir, so
        # it comes from PGPASSWORD (libpq), as a user would export it
        stored = json.loads((tmp_path / "a" / "run.json").read_text())["storage"]
        assert password not in stored
        # B must not finish the study alone while A restarts (it did on a loaded machine): B's driver is
        # stopped (its Ray workers finish what they hold) until the resumed A has asked a trial; B's trials
        # may meanwhile be failed as stale and asked again - its late tells are then dropped (searcher)
        os.kill(b.pid, signal.SIGSTOP)
        try:
            resumed = subprocess.Popen(
                [sys.executable, "-m", "vitsearch.search.cli", "run", str(study), "--resume", str(tmp_path / "a")],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "a-resumed.stderr", "w"), start_new_session=True,
                env={**os.environ, "PGPASSWORD": password, **own_lock(tmp_path)})
            deadline = time.time() + 600
            while not asked_by(url, name, resumed.pid) and resumed.poll() is None and time.time() < deadline:
                time.sleep(0.5)
            assert asked_by(url, name, resumed.pid), (tmp_path / "a-resumed.stderr").read_text()[-3000:]
        finally:
            os.kill(b.pid, signal.SIGCONT)
        assert resumed.wait(timeout=600) == 0, (tmp_path / "a-resumed.stderr").read_text()[-3000:]
        assert b.wait(timeout=600) == 0, (tmp_path / "b.stderr").read_text()[-3000:]
    finally:
        for p in (a, b, *([resumed] if "resumed" in locals() else [])):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    s = load(url, name)
    check_invariants(s, 10)
    failed = [t for t in s.trials if t.state == TrialState.FAIL]
    retried = {t.system_attrs.get("failed_trial") for t in s.trials} - {None}
    assert {t.number for t in failed} <= retried, "a trial of the killed driver was not asked again"
    drivers = {t.user_attrs["driver"].split(":")[1] for t in s.trials if t.user_attrs.get("driver")}
    assert len(drivers) >= 3  # A, B and A resumed all asked trials of the one study
    # the uncompressed model (the first preset, trial 0) completed: itself, a retry of it (failed as stale while B
    # was stopped), or a copy the other driver enqueued as both started (duplicates are settled, not evaluated)
    assert any(t.params == s.trials[0].params and t.state == TrialState.COMPLETE for t in s.trials)
    # no secret anywhere in either run dir (run.json, study.yaml, run.log, tables, Tune's pickles)
    for run in (tmp_path / "a", tmp_path / "b"):
        for f in run.rglob("*"):
            if f.is_file():
                assert password.encode() not in f.read_bytes(), f"password written to {f}"


def test_secrets_are_masked_and_dropped():
    from vitsearch.search.storage import shown_url, storable_url

    url = "postgresql://alice:s3cret@db.example:5432/vs"
    assert "s3cret" not in shown_url(url) and "***" in shown_url(url)
    assert storable_url(url) == "postgresql://alice@db.example:5432/vs"
    assert storable_url("journal:/x/y.log") == "journal:/x/y.log"
    assert storable_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


@pytest.mark.slow
def test_bad_storage_input_is_one_line(postgres, tmp_path):
    import pgserver
    from sqlalchemy.engine import make_url

    url, root = postgres
    u = make_url(url)
    study = write_study(tmp_path / "study.yaml", STUDY)
    cases = [
        (u.set(password="wrong").render_as_string(hide_password=False), "refused the password"),
        (u.set(port=1).render_as_string(hide_password=False), "no database server reachable"),
    ]
    if root is not None:  # superuser SQL: a role that may log in but not create tables
        pgserver.admin_sql(root, "DO $$ BEGIN CREATE ROLE reader LOGIN PASSWORD 'pw'; "
                                 "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        pgserver.admin_sql(root, "DROP DATABASE IF EXISTS locked")
        pgserver.admin_sql(root, "CREATE DATABASE locked")
        pgserver.admin_sql(root, "REVOKE CREATE ON SCHEMA public FROM PUBLIC", database="locked")
        cases.append((u.set(username="reader", password="pw", database="locked").render_as_string(
            hide_password=False), "permission denied"))
    # a second driver with a different study file for a study the storage already holds
    from vitsearch.search.engine.sharing import record_study
    from vitsearch.search.storage import open_storage
    from vitsearch.search.study import load_study

    name = f"other{os.getpid()}"
    record_study(optuna.create_study(storage=open_storage(url), study_name=name, directions=["maximize", "minimize"]),
                 load_study(write_study(tmp_path / "first.yaml", STUDY, name=name)))
    different = write_study(tmp_path / "second.yaml", STUDY, name=name, search={"trials": 12})
    cases.append((url, "different study file"))
    argvs = [("run", different if match == "different study file" else study, "--out", tmp_path / f"r{i}",
              "--storage", bad) for i, (bad, match) in enumerate(cases)]
    # a Ray address that answers but is not a Ray head (the database's port)
    argvs.append(("run", study, "--out", tmp_path / "ray", "--address", f"127.0.0.1:{u.port}"))
    # each is a fresh process that spends its seconds importing before it refuses: two at a time
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda argv: vitsearch(*argv, timeout=120), argvs))
    for i, ((bad, match), out) in enumerate(zip(cases, outs)):
        assert out.returncode == 2, out.stderr
        assert match in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "wrong" not in out.stderr and (u.password not in out.stderr)  # passwords are masked in messages
        assert not (tmp_path / f"r{i}").exists()
    out = outs[-1]
    assert out.returncode == 2 and "is not a Ray head" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "ray").exists()


def test_missing_driver_names_the_install_command():
    from vitsearch.search.storage import open_storage
    from vitsearch.spaces.errors import ConfigError

    try:
        import psycopg2  # noqa: F401
        pytest.skip("psycopg2 is installed here: no missing driver to show")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"no database driver .* pip install psycopg2-binary$"):
        open_storage("postgresql+psycopg2://u@127.0.0.1:1/x")


# ---- a multi-node Ray cluster on this machine ------------------------------------------------

#: token authentication; every node is given --node-ip-address=127.0.0.1 (loopback only)
RAY_ENV = {"RAY_AUTH_MODE": "token"}
#: a node stopped with SIGTERM goes at once: by default it first asks the GCS to drain it, and with
#: the GCS stopped by the same signal that call waits out its 30 s timeout (Ray 2.60, node.py)
NO_DRAIN = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def ray_node(*args: str, log: Path) -> subprocess.Popen:
    """``ray start --block ...`` in a process group of its own: stopped exactly, never with `ray stop`."""
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **RAY_ENV, **NO_DRAIN})


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def completed_nodes(db: Path) -> list[tuple[int, str]]:
    """(trial number, node) of the COMPLETE trials evaluated so far, read from the run's SQLite storage."""
    import sqlite3

    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=1) as con:
            rows = con.execute("select t.number, a.value_json from trials t join trial_user_attributes a "
                               "on a.trial_id = t.trial_id where t.state = 'COMPLETE' and a.key = 'node'").fetchall()
    except sqlite3.Error:
        return []
    return [(n, json.loads(v)) for n, v in rows if v != "null"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 3 min on a quiet 2-core machine; 8-17 min seen at load average 10-15
def test_second_ray_node_killed_mid_run(tmp_path):
    import socket as _socket

    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile

    temp = tempfile.mkdtemp(prefix="vsray-")  # short: Ray's socket paths must fit in 107 bytes
    head = ray_node("--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--include-dashboard=false",
                    f"--temp-dir={temp}", log=tmp_path / "head.log")
    second = None
    try:
        wait_for_port(port, head, lambda: (tmp_path / "head.log").read_text()[-2000:])
        second = ray_node(f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", log=tmp_path / "second.log")
        # the second node registers before the study is planned onto the cluster: `ray start` says it
        # started once the GCS knows the node (it waits for that)
        deadline = time.time() + 120
        while "Ray runtime started." not in (tmp_path / "second.log").read_text() and time.time() < deadline:
            assert second.poll() is None, (tmp_path / "second.log").read_text()[-2000:]
            time.sleep(0.2)
        assert "Ray runtime started." in (tmp_path / "second.log").read_text(), "the second node never started"
        study = write_study(tmp_path / "study.yaml", STUDY, name="cluster", search={"trials": 8, "workers": 2})
        run = tmp_path / "run"
        driver = subprocess.Popen([sys.executable, "-m", "vitsearch.search.cli", "run", str(study), "--out", str(run),
                                   "--address", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                                  stderr=open(tmp_path / "driver.stderr", "w"), start_new_session=True,
                                  env={**os.environ, **RAY_ENV, **own_lock(tmp_path)})
        # once both nodes have evaluated trials, the second node dies (SIGKILL to its whole process group)
        deadline = time.time() + 900
        while len({node for _, node in completed_nodes(run / "optuna.db")}) < 2 and time.time() < deadline:
            assert driver.poll() is None, (tmp_path / "driver.stderr").read_text()[-3000:]
            time.sleep(0.5)
        assert len({node for _, node in completed_nodes(run / "optuna.db")}) == 2, "the study never ran on both nodes"
        stop_group(second, signal.SIGKILL)
        # results the second node reported just before it died may still be told: read after them
        time.sleep(3)
        before = completed_nodes(run / "optuna.db")
        assert driver.wait(timeout=600) == 0, (tmp_path / "driver.stderr").read_text()[-3000:]
    finally:
        if second is not None:
            stop_group(second, signal.SIGKILL)
        stop_group(head)
        __import__("shutil").rmtree(temp, ignore_errors=True)
    s = optuna.load_study(study_name="cluster", storage=f"sqlite:///{run / 'optuna.db'}")
    check_invariants(s, 8)
    assert not [t for t in s.trials if t.state == TrialState.FAIL], "a batch of the killed node was not retried"
    after = [node for n, node in completed_nodes(run / "optuna.db") if (n, node) not in before]
    killed = {node for _, node in before} - set(after)
    assert after and len(set(after)) == 1 and len(killed) == 1, (before, after)  # the rest ran on the head alone
    frame = __import__("pandas").read_parquet(run / "trials.parquet")
    evaluated = frame[(frame.state == "COMPLETE") & frame.eval_seconds.notna()]
    assert evaluated.node.str.fullmatch(r"\S+ [0-9a-f]{12}").all()  # "host IP, node id" of each evaluation


def test_two_drivers_opening_a_new_database_together_both_open_it(postgres):
    """Both create Optuna's tables at once; the slower one's CREATE finds them made and it opens again
    (before: 10 of 10 such pairs failed one driver with a UniqueViolation on alembic_version)."""
    import pgserver
    from sqlalchemy.engine import make_url

    from vitsearch.search.storage import open_storage

    url, root = postgres
    if root is None:
        pytest.skip("needs superuser SQL on the server (VITSEARCH_TEST_PG_ROOT) to create fresh databases")
    for i in range(4):
        db = f"fresh{os.getpid()}x{i}"
        pgserver.admin_sql(root, f"DROP DATABASE IF EXISTS {db}")
        pgserver.admin_sql(root, f"CREATE DATABASE {db} OWNER {make_url(url).username}")
        fresh = make_url(url).set(database=db).render_as_string(hide_password=False)
        with ThreadPoolExecutor(2) as pool:
            storages = list(pool.map(lambda _: open_storage(fresh, on_stale=lambda *a: None), range(2)))
        assert all(s.get_all_studies() == [] for s in storages)
