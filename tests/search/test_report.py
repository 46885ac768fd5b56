"""`vitsearch report` and `vitsearch list` on a real small run, rendered in headless Chromium.

One run (8 trials, one worker so timings do not overlap, real Ray capped at 2 CPUs) is built once for the module; the report
is written once (re-measuring the front: this machine is the study's device) and every
test reads it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from clitools import vitsearch

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--virtual-time-budget=8000"]







@pytest.fixture(scope="module")
def report(run_dir):
    proc = vitsearch("report", run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, run_dir / "report"


def test_report_writes_every_artifact(report, run_dir):
    proc, out = report
    assert "re-measured on this machine" in proc.stdout  # same machine: the fingerprint matches
    for name in ("report.html", "summary.md", "front.png", "importance.png", "latency_check.png",
                 "trials.csv", "trials.parquet", "front.csv", "front.parquet"):
        assert (out / name).is_file(), name
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == len(pd.read_csv(out / "trials.csv")) >= 6
    front = pd.read_parquet(out / "front.parquet")
    assert len(front) >= 1 and front["remeasured_ms"].gt(0).all()
    assert (front["budget_source"] == "measured, re-measured here").all()


def test_pngs_are_real_images(report):
    import matplotlib.image

    _, out = report
    for name in ("front.png", "importance.png", "latency_check.png"):
        path = out / name
        assert path.stat().st_size > 15_000, name  # a blank 600x500 PNG is ~3 kB
        img = matplotlib.image.imread(path)
        assert img.shape[0] >= 400 and img.shape[1] >= 500
        assert img[..., :3].std() > 0.05, f"{name} looks blank"


def test_html_is_self_contained_and_honest(report):
    _, out = report
    text = (out / "report.html").read_text()
    assert "<script src=" not in text  # plotly.js is embedded, not fetched
    assert "Plotly.newPlot" in text and "plotly.js v" in text and len(text) > 3_000_000
    for needle in ("Device fingerprint", "How the numbers were obtained", "re-measured on this machine",
                   "repeatability", "fingerprint_id", "Knob effects"):
        assert needle in text, needle


def test_summary_and_list_share_columns(report, run_dir):
    from vitsearch.search.results.report import FRONT_COLUMNS

    _, out = report
    md = (out / "summary.md").read_text()
    assert "| " + " | ".join(FRONT_COLUMNS) + " |" in md
    assert "## Best under common latency budgets" in md and "how the numbers were obtained" in md.lower()
    proc = vitsearch("list", run_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:8] == ["trial", "rung", "val", "acc", "test", "acc", "[95%", "CI]"]
    assert "test acc [95% CI]" in md and "Wilson" in md
    front = pd.read_csv(out / "front.csv")
    listed = [int(line.split()[0]) for line in lines[2:2 + len(front)]]
    assert listed == front["number"].tolist()


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image

    _, out = report
    url = (out / "report.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    proc = _chromium(["--window-size=1200,1400", f"--screenshot={shot}", url], tmp_path)
    assert shot.is_file(), proc.stderr[-2000:]
    img = matplotlib.image.imread(shot)[..., :3]
    assert (img.mean(axis=-1) < 0.9).mean() > 0.02, "screenshot is (nearly) blank"
    assert _console(proc.stderr) == []
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert _console(dom.stderr) == []
    html = dom.stdout
    fig0 = html[html.index('id="fig0"'):html.index('id="fig1"')]
    assert 'class="main-svg"' in fig0  # plotly drew the Pareto figure
    front = pd.read_csv(out / "front.csv")
    assert fig0.count('class="point"') >= len(front)


def test_console_errors_are_detected(tmp_path):
    """The console check above is not vacuous: a page that throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    proc = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert any("boom" in line for line in _console(proc.stderr))


def test_other_device_is_not_remeasured(run_dir, tmp_path, monkeypatch):
    from vitsearch.search.results import runview
    from vitsearch.search.results.report import build

    real = runview.current_fingerprint
    monkeypatch.setattr(runview, "current_fingerprint", lambda spec: {**real(spec), "fingerprint_id": "000000000000"})
    view = runview.load_run(run_dir)
    result = build(view, tmp_path / "r", remeasure=True, progress=False)
    assert not result["remeasure"].done
    assert "latencies are as recorded for the study's device" in result["remeasure"].why
    assert "000000000000" in (tmp_path / "r" / "report.html").read_text()
    assert not (tmp_path / "r" / "latency_check.png").exists()
    assert (result["front"]["budget_source"] == "measured (as recorded)").all()


def test_predicted_latencies_get_a_hit_rate():
    from vitsearch.search.results.report import latency_check_summary
    from vitsearch.search.results.runview import Remeasure

    table = pd.DataFrame({"number": [1, 2, 3, 4], "recorded_source": ["predicted"] * 4,
                          "recorded_ms": [1.0, 2.0, 3.5, 5.0], "remeasured_ms": [1.05, 2.0, 3.0, 4.0]})
    table["rel_error"] = table["recorded_ms"] / table["remeasured_ms"] - 1
    label, line = latency_check_summary(Remeasure(True, "", table=table))
    assert label == "predicted" and line.startswith("predictor hit rate: 50% (95 % Wilson ")
    assert "of 4 front variants" in line and "compared as milliseconds" in line


def test_too_few_trials_for_importance(run_dir):
    import optuna

    from vitsearch.search.results.report import knob_importances
    from vitsearch.search.results.runview import load_run

    view = load_run(run_dir)
    small = optuna.create_study(directions=["maximize", "minimize"])
    small.add_trials(view.study.trials[:2])
    view.study = small
    importances, why = knob_importances(view)
    assert importances == {} and why.startswith("not computed")


def test_bad_run_dirs(tmp_path):
    import optuna

    from vitsearch.search.results.rundir import RunDir
    from vitsearch.search.study import load_study

    proc = vitsearch("report", tmp_path / "nope")
    assert proc.returncode == 2 and "not a vitsearch run dir" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    empty = RunDir(tmp_path / "empty")
    url = empty.default_storage_url()
    empty.create(load_study("default"), {"storage": url, "study_name": "default"})
    optuna.create_study(storage=url, study_name="default", directions=["maximize", "minimize"])
    for cmd in (["report"], ["list"], ["pick", "--latency-ms", "5"]):
        proc = vitsearch(cmd[0], empty.path, *cmd[1:])
        assert proc.returncode == 2 and "no completed trial" in proc.stderr, proc.stderr


def test_over_budget_trials_without_accuracy_are_plotted_on_the_floor(tmp_path):
    """Cheap-first trials (infeasible on predicted latency, never accuracy-evaluated) still show."""
    import pandas as pd

    from vitsearch.search.results.figures import pareto_plotly, pareto_png

    rows = [
        {"number": 0, "state": "COMPLETE", "feasible": True, "accuracy": 0.98, "latency_ms": 2.0, "size_mb": 5.0},
        {"number": 1, "state": "COMPLETE", "feasible": True, "accuracy": 0.95, "latency_ms": 1.2, "size_mb": 3.0},
        {"number": 2, "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": 2.6, "size_mb": 5.0,
         "infeasible_reason": "predicted latency 2.600 ms > budget 2.2 ms", "settled": "cost budget"},
        {"number": 3, "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": 3.0, "size_mb": 5.0,
         "infeasible_reason": "predicted latency 3.000 ms > budget 2.2 ms", "settled": "cost budget"},
        {"number": 4, "state": "FAIL", "feasible": None, "accuracy": None, "latency_ms": None, "size_mb": None},
    ]
    frame = pd.DataFrame(rows).assign(summary="x", latency_source="predicted")
    front = frame.iloc[:2]
    fig = pareto_plotly(frame, front, {"max_latency_ms": 2.2})
    skipped = [t for t in fig.data if t.name.startswith("over budget")]
    assert len(skipped) == 1 and list(skipped[0].x) == [2.6, 3.0]
    assert max(skipped[0].y) < 0.95  # under every accuracy actually measured
    assert "not accuracy-evaluated: predicted latency 3.000 ms" in skipped[0].hovertext[1]
    out = pareto_png(frame, front, {"max_latency_ms": 2.2}, tmp_path / "front.png")
    assert out.stat().st_size > 10_000
