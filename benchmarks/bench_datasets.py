"""Datasets benchmark (issue 4): bulk import, version creation, reads, memory of exports.

    python benchmarks/bench_datasets.py                      # embedded SQLite in a temp home
    python benchmarks/bench_datasets.py --database-url postgres://postgres@127.0.0.1:5432/scratch

Measures, on one 1M-row DataFrame of 5 columns (id, text, n, score, label):
  * import_samples rows/s (target >= 50,000), and a second, unchanged re-import;
  * create_dataset of all of them with three splits (target <= 30 s), and the same again
    (identical content: returns the existing version);
  * to_pandas() against pyarrow reading the same Parquet from a local file, alternating in
    the same run (target <= 1.5x);
  * export (Parquet, JSONL, CSV) and iter_batches, each in a fresh process, with its peak RSS
    growth over the process's RSS before the call (target <= 300 MB).
Wall and CPU seconds are both shown: the machine is shared, CPU time is the steadier figure.
For scale, the same rows are also bulk-inserted with the plain driver into a scratch copy of
the samples table (the database's own floor on this machine at that moment).
Everything the run creates is in a project of its own, deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _configure(home: str, url: str | None) -> None:
    import tracker

    tracker.configure(home=home, database_url=url, progress=False, quiet=True)


class Timer:
    def __enter__(self) -> Self:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def frame(rows: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": [f"s{i:08d}" for i in range(rows)],
            "text": [f"sample text number {i}" for i in range(rows)],
            "n": rng.integers(0, 1_000_000, rows),
            "score": rng.random(rows),
            "label": rng.choice(["cat", "dog", "bird", "fish"], rows),
        }
    )


# ------------------------------------------------------------------- memory child process


class PeakRSS:
    """Samples this process's RSS every 5 ms in a thread; ``peak`` is the highest seen."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.before = self.proc.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def child(args: argparse.Namespace) -> None:
    """One operation on the version in a fresh process; prints a JSON line."""
    _configure(args.home, args.database_url)
    import pandas  # noqa: F401  - imported before measuring, as a notebook would have it
    import pyarrow.parquet  # noqa: F401

    import tracker

    version = tracker.get_dataset(args.dataset, project=args.project)
    version.snapshot_path()
    out = Path(args.out_dir)
    op = args.child
    rows = 0
    with Timer() as t, PeakRSS() as mem:
        if op == "iter_batches":
            for batch in version.iter_batches(10_000):
                rows += len(batch)
        else:
            path = version.export(out / f"export.{op}")
            rows = version.sample_count
            path.unlink()
    print(
        json.dumps(
            {
                "op": op,
                "rows": rows,
                "wall": t.wall,
                "cpu": t.cpu,
                "rss_before_mb": mem.before / 2**20,
                "growth_mb": (mem.peak - mem.before) / 2**20,
            }
        )
    )


def _in_child(args: argparse.Namespace, op: str, out_dir: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        op,
        "--home",
        args.home,
        "--dataset",
        args.dataset,
        "--project",
        args.project,
        "--out-dir",
        out_dir,
    ]
    if args.database_url:
        cmd += ["--database-url", args.database_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {op} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="PostgreSQL URL of a scratch database (default: SQLite)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=5, help="timed repetitions of each read")
    parser.add_argument("--keep", action="store_true", help="keep the project, samples and version")
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    temp_home = args.home is None
    args.home = args.home or tempfile.mkdtemp(prefix="tracker-bench-datasets-")
    args.project = f"bench-datasets-{os.getpid()}"
    args.dataset = "bench"
    _configure(args.home, args.database_url)
    import pyarrow.parquet as pq
    from django.db import connection

    import tracker
    from tracker.models import Sample

    results: dict[str, object] = {
        "database": connection.vendor,
        "rows": args.rows,
        "python": sys.version.split()[0],
        "load_average_at_start": os.getloadavg(),
    }
    df = frame(args.rows)
    try:
        from tracker.services.projects import get_or_create_project

        project_id = get_or_create_project(args.project).pk
        results["raw_insert_floor"] = raw_insert_floor(df, project_id)
        with Timer() as t:
            report = tracker.import_samples(args.project, df)
        assert report.created == args.rows, report
        results["import"] = {"wall": t.wall, "cpu": t.cpu, "rows_per_s": args.rows / t.wall}
        with Timer() as t:
            report = tracker.import_samples(args.project, df)
        assert report.unchanged == args.rows, report
        results["reimport_unchanged"] = {
            "wall": t.wall,
            "cpu": t.cpu,
            "rows_per_s": args.rows / t.wall,
        }
        del df

        samples = Sample.objects.filter(project__name=args.project)
        splits = {"train": 0.8, "val": 0.1, "test": 0.1}
        with Timer() as t:
            version = tracker.create_dataset(args.dataset, samples, splits=splits)
        assert version.sample_count == args.rows
        results["create_dataset"] = {"wall": t.wall, "cpu": t.cpu, "version": version.version}
        with Timer() as t:
            again = tracker.create_dataset(args.dataset, samples, splits=splits)
        assert again == version
        results["create_dataset_identical"] = {"wall": t.wall, "cpu": t.cpu}

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "copy.parquet"
            shutil.copyfile(version.snapshot_path(), local)
            ours, baseline = [], []
            for _ in range(args.reads):  # alternate, so both see the same machine state
                with Timer() as t:
                    pq.read_table(local).to_pandas()
                baseline.append(t.wall)
                with Timer() as t:
                    version.to_pandas()
                ours.append(t.wall)
            results["to_pandas"] = {
                "tracker_best": min(ours),
                "tracker_median": statistics.median(ours),
                "pyarrow_best": min(baseline),
                "pyarrow_median": statistics.median(baseline),
                "ratio_best": min(ours) / min(baseline),
                "ratio_median": statistics.median(ours) / statistics.median(baseline),
                "snapshot_mb": local.stat().st_size / 2**20,
            }
            results["memory"] = [
                _in_child(args, op, tmp) for op in ("iter_batches", "parquet", "jsonl", "csv")
            ]
    finally:
        if not args.keep:
            _cleanup(args.project)
        if temp_home and not args.keep:
            shutil.rmtree(args.home, ignore_errors=True)
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    _summary(results)


def raw_insert_floor(df, project_id: int) -> dict:
    """The database's own floor, measured in the same run: the same rows, already as JSON
    text, bulk-inserted with the plain driver (COPY on PostgreSQL, executemany on SQLite) in
    one transaction into a scratch table with the samples table's columns, indexes, checks
    and foreign key. No validation, no conversion, no upsert."""
    import json

    from django.db import connection, transaction
    from django.utils import timezone

    rows = [
        (eid, json.dumps({"text": t, "n": int(n), "score": float(sc), "label": lab}))
        for eid, t, n, sc, lab in zip(df["id"], df["text"], df["n"], df["score"], df["label"])
    ]
    now = timezone.now()
    cols = "external_id, data, metadata, media, media_uri, project_id, created_at, updated_at"
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute("CREATE TABLE bench_floor (LIKE tracker_sample INCLUDING ALL)")
            cur.execute(
                "ALTER TABLE bench_floor ADD FOREIGN KEY (project_id) REFERENCES "
                "tracker_project (id) DEFERRABLE INITIALLY DEFERRED"
            )
        else:
            cur.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'tracker_sample'")
            for (ddl,) in cur.fetchall():
                if ddl:
                    ddl = ddl.replace('"tracker_sample"', '"bench_floor"')
                    cur.execute(ddl.replace('INDEX "', 'INDEX "bench_floor_'))
    try:
        with Timer() as t, transaction.atomic(), connection.cursor() as cur:
            if connection.vendor == "postgresql":
                with cur.cursor.copy(f"COPY bench_floor ({cols}) FROM STDIN") as copy:
                    for eid, data in rows:
                        copy.write_row((eid, data, "{}", "", "", project_id, now, now))
            else:
                stamp = connection.ops.adapt_datetimefield_value(now)
                cur.executemany(
                    f"INSERT INTO bench_floor ({cols}) VALUES (%s, %s, '{{}}', '', '', %s, %s, %s)",
                    [(eid, data, project_id, stamp, stamp) for eid, data in rows],
                )
    finally:
        with connection.cursor() as cur:
            cur.execute("DROP TABLE bench_floor")
    return {"wall": t.wall, "cpu": t.cpu, "rows_per_s": len(rows) / t.wall}


def _cleanup(project: str) -> None:
    """Delete the run's project in steps (one ORM delete of a million samples would collect
    them all in memory first)."""
    from tracker.models import Dataset, DatasetItem, DatasetVersion, Project, Sample

    DatasetItem.objects.filter(version__dataset__project__name=project).delete()
    DatasetVersion.objects.filter(dataset__project__name=project).delete()
    Dataset.objects.filter(project__name=project).delete()
    pks = list(Sample.objects.filter(project__name=project).values_list("pk", flat=True))
    for start in range(0, len(pks), 500):
        Sample.objects.filter(pk__in=pks[start : start + 500]).delete()
    Project.objects.filter(name=project).delete()


def _summary(r: dict) -> None:
    imp, again = r["import"], r["reimport_unchanged"]
    create, same, read = r["create_dataset"], r["create_dataset_identical"], r["to_pandas"]
    print(
        f"\n{r['database']}, {r['rows']:,} rows, load average {r['load_average_at_start'][0]:.1f}"
    )
    print(
        f"import_samples:            {imp['rows_per_s']:>10,.0f} rows/s "
        f"({imp['wall']:.1f} s wall, {imp['cpu']:.1f} s CPU)"
    )
    floor = r["raw_insert_floor"]
    print(
        f"  (driver-only bulk insert of the same rows: {floor['rows_per_s']:,.0f} rows/s, "
        f"{floor['wall']:.1f} s)"
    )
    print(
        f"re-import, all unchanged:  {again['rows_per_s']:>10,.0f} rows/s ({again['wall']:.1f} s)"
    )
    print(f"create_dataset:            {create['wall']:>10.1f} s wall ({create['cpu']:.1f} s CPU)")
    print(f"create_dataset, identical: {same['wall']:>10.1f} s wall (returns the existing version)")
    print(
        f"to_pandas vs pyarrow:      {read['ratio_best']:>10.2f}x best, {read['ratio_median']:.2f}x "
        f"median ({read['tracker_best']:.2f} s vs {read['pyarrow_best']:.2f} s, "
        f"{read['snapshot_mb']:.0f} MB Parquet)"
    )
    for m in r["memory"]:
        print(
            f"{m['op'] + ':':<27}{m['growth_mb']:>10.0f} MB peak RSS growth "
            f"({m['wall']:.1f} s, {m['rows']:,} rows)"
        )


if __name__ == "__main__":
    main()
