"""notebooks/datasets.ipynb executed in a real kernel: a dataset from a queryset in a cell,
loaded into pandas, linked to a run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from notebooks import CellResult, run_cells, run_notebook

pytestmark = [pytest.mark.notebook]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "datasets.ipynb"


def _lines(nb) -> dict[str, str]:
    """The marker lines the notebook prints ("VERSION 1 True ..."), by marker."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        result = CellResult(cell.source, cell.outputs)
        assert result.error is None, (cell.source, result.error)
        for line in result.stdout.splitlines():
            word, _, rest = line.partition(" ")
            if word.isupper():
                out[word] = rest
    return out


def test_datasets_notebook(subprocess_env, tmp_path):
    from tracker.models import DatasetVersion, RunInput

    nb = nbformat.read(NOTEBOOK, as_version=4)
    run_notebook(nb, subprocess_env, cwd=tmp_path, timeout=300)
    out = _lines(nb)
    assert out["IMPORTED"] == "2000 0"
    version, same_size, counts = out["VERSION"].split(" ", 2)
    assert version == "1" and same_size == "True" and "'train':" in counts
    assert out["PANDAS"].split(" ", 2)[1] == "True"
    assert out["RUNS"] == "[('baseline', 'train')]"
    assert out["INPUTS"] == "[('reviews-en', 1, 'train')]"
    assert out["STABLE"] == "True" and out["FROZEN"] == "True"
    assert out["EXPORTED"] == "True True" and (tmp_path / "reviews-en-v2.jsonl").exists()
    assert out["ASYNC"].startswith("2 ")
    # What the kernel stored, seen from here.
    use = RunInput.objects.select_related("run", "version__dataset").get()
    assert (use.run.name, use.version.dataset.name, use.version.version) == (
        "baseline",
        "reviews-en",
        1,
    )
    assert list(DatasetVersion.objects.order_by("version").values_list("version", "state")) == [
        (1, "ready"),
        (2, "ready"),
    ]


def test_queryset_cell_with_the_safe_mode_kernel(subprocess_env):
    """With Django's async-unsafe opt-out off, tracker's own calls still work from cells
    (they hop to the database thread), including a lazy queryset built in the cell."""
    cells = run_cells(
        [
            (
                "import tracker\ntracker.configure(allow_async_unsafe=False)\n"
                "tracker.add_samples('nbq', [{'id': str(i), 'k': i % 2} for i in range(30)])"
            ),
            (
                "from tracker.models import Sample\n"
                "v = tracker.create_dataset('nbq', Sample.objects.filter(project__name='nbq', data__k=1),"
                " splits={'a': 0.5, 'b': 0.5})\n"
                "df = v.to_pandas()\nprint(len(df), sorted(set(df['k'])), sum(v.counts.values()))"
            ),
            "print(len(tracker.get_dataset('nbq').diff(v).added))",
        ],
        subprocess_env,
    )
    assert all(c.error is None for c in cells), [c.error for c in cells]
    assert cells[1].stdout.strip() == "15 [1] 15"
    assert cells[2].stdout.strip() == "0"
