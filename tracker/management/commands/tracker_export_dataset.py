"""`tracker export-dataset NAME PATH`: write a dataset version to Parquet, JSONL or CSV."""

from __future__ import annotations

from typing import Any

from tracker.management.base import Result, TrackerCommand, format_size


class Command(TrackerCommand):
    help = "Write a dataset version (or one split) to a Parquet, JSONL or CSV file, streaming."
    examples = (
        "tracker export-dataset reviews-clean out/reviews.parquet",
        "tracker export-dataset reviews-clean train.jsonl --version 3 --split train",
        "tracker export-dataset reviews-clean out.csv --project reviews --force",
        "tracker export-dataset reviews-clean out.jsonl --progress --json   # a bar on stderr, JSON on stdout",
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="the dataset")
        parser.add_argument("path", help="the file to write; .parquet, .jsonl or .csv picks the format")
        parser.add_argument("--version", dest="dataset_version", metavar="N", type=int, help="the version number (default: the latest)")
        parser.add_argument("--project", help="the dataset's project, when several projects use the name")
        parser.add_argument("--split", help="only this split (train, val, ...)")
        parser.add_argument("--format", choices=("parquet", "jsonl", "csv"), help="the format, when the extension does not say")
        parser.add_argument("--force", action="store_true", help="overwrite PATH if it exists")

    def run(self, *, name: str, path: str, dataset_version: int | None, project: str | None, split: str | None,
            format: str | None, force: bool, **options: Any) -> Result:
        from tracker.services import dataset_files as files
        from tracker.services import datasets

        dest = self.output_path(path, force=force)
        info = datasets.get_dataset(name, dataset_version, project=project)
        snapshot = files.local_path(info.snapshot_name, info.snapshot_sha256, info.label)
        rows = info.counts.get(split, 0) if split else info.sample_count
        bar = self.progress(rows, f"export {info.label}", " rows")
        try:
            written = files.export(snapshot, dest, format, split, sorted(info.splits), progress=bar.update)
        finally:
            bar.close()
        size = written.stat().st_size
        fmt = format or written.suffix.lstrip(".").lower()
        data = {
            "project": info.project,
            "dataset": info.name,
            "version": info.version,
            "split": split,
            "rows": rows,
            "path": str(written.resolve()),
            "format": fmt,
            "bytes": size,
            "content_hash": info.content_hash,
        }
        part = f" split {split!r}" if split else ""
        text = f"Wrote {info.label}{part}: {rows:,} rows to {written} ({fmt}, {format_size(size)})."
        return Result(data, text)
