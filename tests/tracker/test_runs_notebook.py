"""Runs in real Jupyter cells (nbclient + ipykernel): sync and awaited logging, re-executed
cells, interrupts, and the example notebook."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nbformat
import pytest
from test_runs_support import _runs_isolated, metric_count, wait_for  # noqa: F401

from notebooks import kernel_session, run_cells, run_notebook
from tracker.models import Metric, Run

pytestmark = [pytest.mark.notebook]
ROOT = Path(__file__).resolve().parents[2]


def test_a_notebook_logs_through_tracker_and_tracker_aio_then_reads_a_dataframe(subprocess_env):
    cells = run_cells(
        [
            "import tracker\ntracker.configure(quiet=True)",
            # sync, in a cell whose thread runs an event loop
            "with tracker.start_run('nb', 'sync', params={'lr': 0.1}) as run:\n"
            "    for i in range(1000):\n"
            "        run.log_metric('loss', 1 / (i + 1))\n"
            "print(run.status)",
            # top-level await
            "async with await tracker.aio.start_run('nb', 'async', params={'lr': 0.2}) as arun:\n"
            "    for i in range(500):\n"
            "        await arun.log_metric('loss', 2 / (i + 1))\n"
            "print(arun.status)",
            "df = tracker.runs_frame('nb')\n"
            "print(sorted(df['name']), sorted(df['params.lr']), df['status'].unique().tolist())\n"
            "print(type(df).__name__, len(run.history()), len(await arun.history()))",
            "adf = await tracker.aio.runs_frame('nb', name='async')\n"
            "print(adf.loc[arun.id, 'metrics.loss'])",
        ],
        subprocess_env,
    )
    assert [c.error for c in cells] == [None] * len(cells), [c.error for c in cells]
    assert cells[1].stdout.strip() == "finished"
    assert cells[2].stdout.strip() == "finished"
    lines = cells[3].stdout.strip().splitlines()
    assert lines[0] == "['async', 'sync'] [0.1, 0.2] ['finished']"
    assert lines[1] == "DataFrame 1000 500"
    assert float(cells[4].stdout) == pytest.approx(2 / 500)
    # ... and the test process sees the same runs in the database.
    assert sorted(Run.objects.filter(project__name="nb").values_list("name", flat=True)) == [
        "async",
        "sync",
    ]
    assert Metric.objects.filter(run__project__name="nb").count() == 1500


def test_re_executing_a_cell_that_starts_a_run_never_fails(subprocess_env):
    cell = "run = tracker.start_run('cells', 'exp')\nrun.log_metric('x', 1.0)\nprint(run.id)"
    anonymous = "anon = tracker.start_run('cells')\nprint(anon.id)"
    with kernel_session(subprocess_env) as kernel:
        assert kernel.run("import tracker\ntracker.configure(quiet=True)").error is None
        first = kernel.run(cell)
        second = kernel.run(cell)
        a1 = kernel.run(anonymous)
        a2 = kernel.run(anonymous)
        loop = kernel.run(
            "trials = [tracker.start_run('cells', 'trial', params={'i': i}) for i in range(3)]\n"
            "[t.finish() for t in trials]\nprint(len(trials))"
        )
        done = kernel.run("run.finish(); anon.finish(); print(run.status, anon.status)")
    for out in (first, second, a1, a2, loop, done):
        assert out.error is None, out.error
    assert "still running from an earlier execution of this cell" in second.stderr
    first_id, second_id = first.stdout.strip(), second.stdout.strip()
    assert first_id != second_id
    assert Run.objects.get(uid=first_id).status == "finished"
    assert Run.objects.get(uid=a1.stdout.strip()).status == "finished"
    assert done.stdout.strip() == "finished finished"
    assert Run.objects.filter(project__name="cells", name="trial").count() == 3
    assert set(Run.objects.filter(project__name="cells").values_list("status", flat=True)) == {
        "finished"
    }


def test_interrupting_a_cell_marks_its_run_killed(subprocess_env):
    cell = (
        "import time\n"
        "with tracker.start_run('interrupt', 'loop') as run:\n"
        "    print(run.id, flush=True)\n"
        "    i = 0\n"
        "    while True:\n"
        "        run.log_metric('x', float(i))\n"
        "        i += 1\n"
        "        time.sleep(0.0005)"
    )
    with kernel_session(subprocess_env) as kernel:
        assert (
            kernel.run("import tracker\ntracker.configure(quiet=True, flush_interval=0.2)").error
            is None
        )
        result = {}
        worker = threading.Thread(target=lambda: result.setdefault("out", kernel.run(cell)))
        worker.start()
        run = wait_for(lambda: Run.objects.filter(project__name="interrupt").first(), timeout=60)
        wait_for(lambda: metric_count(run.uid) > 100, timeout=60)
        kernel._client.km.interrupt_kernel()
        worker.join(timeout=60)
        after = kernel.run("print(run.status)")
    assert result["out"].error["ename"] == "KeyboardInterrupt"
    assert after.stdout.strip() == "killed"
    stored = Run.objects.get(uid=run.uid)
    assert stored.status == "killed" and "KeyboardInterrupt" in stored.error
    time.sleep(0)  # the points logged up to the interrupt are all there
    steps = list(Metric.objects.filter(run=stored).order_by("step").values_list("step", flat=True))
    assert steps == list(range(len(steps))) and len(steps) > 100


def test_the_example_notebook_runs_top_to_bottom(subprocess_env, tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "runs.ipynb", as_version=4)
    run_notebook(nb, subprocess_env, cwd=tmp_path, timeout=300)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, errors
    names = set(Run.objects.filter(project__name="demo").values_list("name", flat=True))
    assert names == {"baseline", "interactive", "async"}
    assert set(Run.objects.filter(project__name="demo").values_list("status", flat=True)) == {
        "finished"
    }
    plot_cell = next(c for c in nb.cells if "plot_metrics" in c.source)
    assert any("image/png" in o.get("data", {}) for o in plot_cell.outputs)
