"""`vitsearch report` and `vitsearch list` on a real small run, rendered in headless Chromium.

One run (8 trials, one worker so timings do not overlap, real Ray capped at 2 CPUs) is built once for the module; the report
is written once (re-measuring the front: this machine is the study's device) and every
test reads it.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from clitools import one_line_exit_2, vitsearch

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
    for line, (_, r) in zip(lines[2:2 + len(front)], front.iterrows()):  # one ms basis: a trial's ms is the report's
        assert f" {r['latency_ms']:.3f} " in line
        assert r["latency_source"] != "measured" or f"measured, {int(r['latency_runs'])} passes" in line
    assert "evaluated trials" in lines[-1] and "every ms in this report = ratio" in lines[-1]
    printed = (run_dir.parent / "run.stdout").read_text()  # the table `vitsearch run` printed at its end: same ms
    assert "every ms in this report = ratio" in printed
    for _, r in front.iterrows():
        assert any(line.split()[:1] == [str(int(r["number"]))] and f" {r['latency_ms']:.3f} " in line
                   for line in printed.splitlines())


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _plot_points(dom: str, div_id: str) -> tuple[dict[str, list[float]], float]:
    """x (pixels within the plot area) of every point plotly drew in figure ``div_id``, by trace uid; the plot's width."""
    fig = dom[dom.index(f'id="{div_id}"'):]
    fig = fig[:fig.find('id="fig', 10)] if fig.find('id="fig', 10) > 0 else fig
    width = float(re.search(r'class="nsewdrag drag"[^>]*? width="([\d.]+)"', fig).group(1))
    points = {}
    for chunk in fig.split('<g class="trace scatter trace')[1:]:
        points[chunk[:chunk.index('"')]] = [
            float(x) for x in re.findall(r'class="point" transform="translate\(([-\d.e]+),', chunk)]
    return points, width


def _axis_fraction(ms, axis_type: str, lo: float, hi: float):
    """Where ``ms`` lies along an axis of ``axis_type`` from ``lo`` to ``hi`` (0 = left end, 1 = right end)."""
    import numpy as np

    f = np.log10 if axis_type == "log" else (lambda v: np.asarray(v, dtype=float))
    return (f(np.asarray(ms, dtype=float)) - f(lo)) / (f(hi) - f(lo))


def test_report_renders_in_headless_chromium(report, run_dir, tmp_path):
    """The page renders without console errors, and the front is drawn where its latencies put it on the axis
    the figure chose (:func:`latency_axis`), every other trial inside the plot (far ones on its edge)."""
    import matplotlib.image

    from vitsearch.search.results.figures import pareto_plotly
    from vitsearch.search.results.runview import load_run

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
    points, width = _plot_points(dom.stdout, "fig0")
    front = pd.read_parquet(out / "front.parquet")
    assert len(points["paretofront"]) == len(front)
    fig = pareto_plotly(pd.read_parquet(out / "trials.parquet"), front, {"min_accuracy": load_run(run_dir).min_accuracy})
    rng = fig.layout.xaxis.range
    lo, hi = (10 ** rng[0], 10 ** rng[1]) if fig.layout.xaxis.type == "log" else rng
    expected = _axis_fraction(front["latency_ms"], fig.layout.xaxis.type, lo, hi) * width
    assert sorted(points["paretofront"]) == pytest.approx(sorted(expected), abs=2.0)
    drawn = [x for xs in points.values() for x in xs]
    assert len(drawn) == sum(len(t.x) for t in fig.data) > len(front)
    assert all(-1 <= x <= width + 1 for x in drawn), (min(drawn), max(drawn), width)


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


def test_bad_run_dirs(tmp_path, monkeypatch, capsys):
    """Refused in one line, exit 2, nothing written (in this process: what a real process adds is
    test_command_input.py's)."""
    import optuna

    from vitsearch.search.results.rundir import RunDir
    from vitsearch.search.study import load_study

    monkeypatch.chdir(tmp_path)
    one_line_exit_2(["report", tmp_path / "nope"], tmp_path, capsys, "not a vitsearch run dir")
    empty = RunDir(tmp_path / "empty")
    url = empty.default_storage_url()
    empty.create(load_study("default"), {"storage": url, "study_name": "default"})
    optuna.create_study(storage=url, study_name="default", directions=["maximize", "minimize"])
    for cmd in (["report"], ["list"], ["pick", "--latency-ms", "5"]):
        one_line_exit_2([cmd[0], empty.path, *cmd[1:]], tmp_path, capsys, "no completed trial")
    lost = RunDir(tmp_path / "lost")  # its database deleted: refused, and reading it creates no empty one
    lost.create(load_study("default"), {"storage": lost.default_storage_url(), "study_name": "default"})
    before = sorted(p.name for p in lost.path.iterdir())
    for cmd in (["report"], ["list"], ["pick", "--latency-ms", "5"]):
        one_line_exit_2([cmd[0], lost.path, *cmd[1:]], tmp_path, capsys, "does not exist; was it moved or deleted")
    assert sorted(p.name for p in lost.path.iterdir()) == before


def test_over_budget_trials_without_accuracy_are_plotted_on_the_floor(tmp_path):
    """Cheap-first trials (infeasible on predicted latency, never accuracy-evaluated) still show."""
    import pandas as pd

    from vitsearch.search.results.figures import pareto_plotly, pareto_png

    rows = [
        {"number": 0, "state": "COMPLETE", "feasible": True, "accuracy": 0.98, "latency_ms": 2.0, "size_mb": 5.0},
        {"number": 1, "state": "COMPLETE", "feasible": True, "accuracy": 0.95, "latency_ms": 1.2, "size_mb": 3.0},
        {"number": 2, "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": 2.4, "size_mb": 5.0,
         "infeasible_reason": "predicted latency 2.400 ms > budget 2.2 ms", "settled": "cost budget"},
        {"number": 3, "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": 3.0, "size_mb": 5.0,
         "infeasible_reason": "predicted latency 3.000 ms > budget 2.2 ms", "settled": "cost budget"},
        {"number": 4, "state": "FAIL", "feasible": None, "accuracy": None, "latency_ms": None, "size_mb": None},
    ]
    frame = pd.DataFrame(rows).assign(summary="x", latency_source="predicted")
    front = frame.iloc[:2]
    fig = pareto_plotly(frame, front, {"max_latency_ms": 2.2})
    skipped = [t for t in fig.data if t.name.startswith("over budget")]
    assert len(skipped) == 1 and list(skipped[0].x) == [2.4]  # near the front: in place
    assert max(skipped[0].y) < 0.95  # under every accuracy actually measured
    assert "not accuracy-evaluated: predicted latency 2.400 ms" in skipped[0].hovertext[0]
    edge = [t for t in fig.data if t.name.startswith("beyond")]  # 3.0 ms: beyond 1.25 x the front's 2.0 ms
    assert len(edge) == 1 and list(edge[0].y) == [skipped[0].y[0]] and "3.000 ms" in edge[0].hovertext[0]
    out = pareto_png(frame, front, {"max_latency_ms": 2.2}, tmp_path / "front.png")
    assert out.stat().st_size > 10_000


def _far_frame() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default run's shape (issue 25): six front variants between 2 and 5 ms, dominated trials near them,
    settled trials out to 70 ms (over the budget, never accuracy-evaluated)."""
    rows = [{"number": i, "state": "COMPLETE", "feasible": True, "accuracy": a, "latency_ms": ms, "size_mb": 4 - i / 3}
            for i, (ms, a) in enumerate([(2.1, .90), (2.6, .93), (3.0, .95), (3.6, .96), (4.3, .97), (4.9, .98)])]
    rows += [{"number": 6 + i, "state": "COMPLETE", "feasible": True, "accuracy": a, "latency_ms": ms, "size_mb": 4.0}
             for i, (ms, a) in enumerate([(3.3, .91), (4.6, .92), (5.4, .95)])]
    rows += [{"number": 9 + i, "state": "PRUNED", "feasible": False, "accuracy": None, "latency_ms": ms, "size_mb": 5.0,
              "settled": "no gain", "infeasible_reason": f"measured latency {ms:.3f} ms > uncompressed"}
             for i, ms in enumerate([31.0, 45.0, 70.0])]
    frame = pd.DataFrame(rows).assign(summary="x", latency_source="measured")
    return frame, frame.iloc[:6]


def test_far_trials_do_not_squeeze_the_front():
    """The HTML figure and the PNG share one latency axis: the front's range, far trials on its right edge."""
    from vitsearch.search.results.figures import pareto_figure, pareto_plotly

    frame, front = _far_frame()
    fig = pareto_plotly(frame, front, {"min_accuracy": 0.9})
    kind, rng = fig.layout.xaxis.type, fig.layout.xaxis.range
    lo, hi = (10 ** rng[0], 10 ** rng[1]) if kind == "log" else rng
    at = _axis_fraction(front["latency_ms"], kind, lo, hi)
    assert at.min() >= 0 and at.max() <= 1 and at.max() - at.min() > 0.6, (kind, lo, hi)
    edge = next(t for t in fig.data if t.name.startswith("beyond"))
    assert any(h.endswith("70.000 ms, beyond the axis") for h in edge.hovertext) and len(edge.x) == 3
    assert list(edge.x) == pytest.approx([hi] * 3)
    assert 5.4 not in list(edge.x)  # a dominated trial near the front stays on the axis, in place
    ax = pareto_figure(frame, front, {"min_accuracy": 0.9}).axes[0]
    assert ax.get_xscale() == kind and ax.get_xlim() == pytest.approx((lo, hi))
    right = [c for c in ax.collections if len(c.get_offsets()) == 3 and c.get_offsets()[:, 0].min() == hi]
    assert len(right) == 1 and not right[0].get_clip_on()  # drawn on the edge, not clipped away


def test_far_trials_do_not_squeeze_the_front_in_chromium(tmp_path):
    """Rendered: the six front points spread over most of the plot's width, every point inside the plot."""
    from vitsearch.search.results.figures import pareto_plotly

    frame, front = _far_frame()
    page = tmp_path / "front.html"
    page.write_text(pareto_plotly(frame, front, {}).to_html(include_plotlyjs=True, div_id="fig0"))
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    points, width = _plot_points(dom.stdout, "fig0")
    xs = points["paretofront"]
    assert len(xs) == 6 and (max(xs) - min(xs)) / width > 0.6, (xs, width)
    drawn = [x for v in points.values() for x in v]
    assert len(drawn) == len(frame) + len(front) and all(-1 <= x <= width + 1 for x in drawn)
    assert sum(abs(x - width) < 1 for x in drawn) == 3  # the far trials, on the right edge


def test_latency_check_plots_what_its_text_judges():
    """The check figure's points are the relative errors its text counts, the band is ±10 %, and the recorded
    intervals are drawn as bars that cross zero exactly where the text counts a re-measurement inside."""
    from vitsearch.search.results.checkplot import check_points, latency_check_plotly
    from vitsearch.search.results.report import latency_check_summary
    from vitsearch.search.results.runview import Remeasure

    rec, now = [0.50, 0.62, 0.80, 0.43], [0.52, 0.53, 0.79, 0.40]  # ratios; trial 2 is 17 % off
    table = pd.DataFrame({"number": [1, 2, 3, 4], "recorded_source": "measured", "compared": "ratio",
                          "recorded_ratio": rec, "remeasured_ratio": now,
                          "recorded_ms": [r * 6 for r in rec], "remeasured_ms": [r * 6 for r in now],
                          "recorded_low_ms": [r * 6 * 0.95 for r in rec],
                          "recorded_high_ms": [r * 6 * 1.05 for r in rec],
                          "remeasured_speedup": [1 / r for r in now]})
    table["rel_error"] = table["recorded_ratio"] / table["remeasured_ratio"] - 1
    _, line = latency_check_summary(Remeasure(True, "", table=table))
    fig = latency_check_plotly(table, "recorded")
    pts = next(t for t in fig.data if t.name == "front variants")
    assert list(pts.y) == pytest.approx(list(100 * table["rel_error"]))
    band = fig.layout.shapes[0]
    assert (band.y0, band.y1) == (-10, 10)
    hits = sum(abs(y) <= 10 for y in pts.y)
    assert hits == 3 and line.startswith("repeatability") and ": 75% (" in line
    p = check_points(table)
    inside = ((p["err_low"] <= 0) & (p["err_high"] >= 0)).mean()
    assert f"inside the recorded interval for 2 of 4 ({inside:.0%}; stated level not recorded)" in line
    assert inside == 0.5
    table["recorded_confidence"] = 0.95  # the level the intervals state is said beside the coverage measured
    assert "for 2 of 4 (50%; stated 95%)" in latency_check_summary(Remeasure(True, "", table=table))[1]


def test_report_is_on_one_ms_basis(report):
    """Every ms the report writes is ratio x one reference time, stated once; a variant has one latency in the
    front table and in "best under common budgets"."""
    proc, out = report
    front, trials = pd.read_csv(out / "front.csv"), pd.read_csv(out / "trials.csv")
    base = (front["latency_ms"] / front["latency_ratio"]).iloc[0]
    assert (front["latency_ms"] / front["latency_ratio"]).tolist() == pytest.approx([base] * len(front))
    assert (front["remeasured_ms"] / front["remeasured_ratio"]).tolist() == pytest.approx([base] * len(front))
    with_ratio = trials.dropna(subset=["latency_ratio"])
    assert (with_ratio["latency_ms"] / with_ratio["latency_ratio"]).tolist() == pytest.approx([base] * len(with_ratio))
    md, page = (out / "summary.md").read_text(), html.unescape((out / "report.html").read_text())
    stated = f"the uncompressed model's time of {base:.3f} ms"
    assert md.count("every ms in this report") == 1 and stated in md
    assert page.count("every ms in this report") == 1 and stated in page
    from vitsearch.search.results.report import FRONT_COLUMNS

    front_ms = {row[0]: row[FRONT_COLUMNS.index("latency ms")] for row in _md_rows(md, "Pareto front")}
    budget_rows = _md_rows(md, "Best under common latency budgets")
    budget_ms = {row[1]: row[4].split()[0] for row in budget_rows if row[1] != "-"}
    assert set(front_ms) == set(front["number"].astype(str)) and set(budget_ms) <= set(front_ms)
    assert all(front_ms[n] == ms for n, ms in budget_ms.items()), (front_ms, budget_ms)


def _md_rows(md: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``## heading``, as stripped cells."""
    block = md.split(f"## {heading}\n")[1].split("\n## ")[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()
            if line.startswith("| ")][1:]


def test_html_front_table_is_what_a_reader_decides_with(report):
    from vitsearch.search.results.page import DECISION_COLUMNS

    _, out = report
    page = (out / "report.html").read_text()
    table = page[page.index("<table class='front'>"):]
    table = table[:table.index("</table>")]
    assert re.findall(r"<th>(.*?)</th>", table) == list(DECISION_COLUMNS)
    front = pd.read_csv(out / "front.csv")
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    assert [int(r[0]) for r in rows] == front["number"].tolist()
    assert all(re.fullmatch(r"x\d+\.\d\d( \[\d+\.\d\d, \d+\.\d\d\])?", r[5]) for r in rows), rows
    assert "<a href='front.csv'>front.csv</a>" in page and "<details><summary>All front columns" in page

