"""The run's progress off a terminal: plain lines at a bounded rate, not carriage-return redraws."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from vitsearch.search.engine.progress import LineBar, Progress


def test_line_bar_writes_at_most_one_line_per_interval_and_the_last_state():
    out = io.StringIO()
    bar = LineBar("study s", 40, initial=2, every=3600, stream=out)
    bar.set_postfix_str("rungs 2/0/0")
    bar.refresh()  # the first line comes at once
    for n in range(3, 30):
        bar.n = n
        bar.refresh()  # within the interval: nothing
    bar.n = 40
    bar.set_postfix_str("rungs 40/20/11")
    bar.close()  # the last state, whatever the interval
    lines = out.getvalue().splitlines()
    assert [re.sub(r" at \d+ s:", ":", line) for line in lines] == [
        "study s: 2/40 evaluated, rungs 2/0/0", "study s: 40/40 evaluated, rungs 40/20/11"]
    assert lines[0].startswith("study s at 0 s: ") and "\r" not in out.getvalue()


def test_line_bar_repeats_no_line_and_writes_each_change_past_the_interval():
    out = io.StringIO()
    bar = LineBar("study s", 3, every=0, stream=out)
    bar.refresh()
    bar.refresh()  # unchanged: not written again
    bar.n = 1
    bar.refresh()
    bar.close()  # unchanged since the last line: nothing more
    assert out.getvalue().splitlines() == ["study s at 0 s: 0/3 evaluated", "study s at 0 s: 1/3 evaluated"]


def test_progress_uses_lines_when_stderr_is_not_a_terminal(capsys):
    plan = SimpleNamespace(spec=SimpleNamespace(name="s"), trials=10)
    progress = Progress(plan, [("accuracy", "maximize")])
    progress.start(study=None, done=4)  # pytest's captured stderr is not a terminal
    assert isinstance(progress.bar, LineBar) and progress.bar.n == 4 and progress.bar.total == 10
    progress.close()
    assert capsys.readouterr().err == "study s at 0 s: 4/10 evaluated\n"


def test_progress_uses_lines_where_stderr_is_closed(monkeypatch, capsys):
    """Python sets sys.stderr to None when fd 2 is closed (`2>&-`): no crash, and the lines go nowhere."""
    monkeypatch.setattr("sys.stderr", None)
    progress = Progress(SimpleNamespace(spec=SimpleNamespace(name="s"), trials=2), [("accuracy", "maximize")])
    progress.start(study=None, done=0)
    assert isinstance(progress.bar, LineBar)
    progress.close()
    assert capsys.readouterr().out == ""
