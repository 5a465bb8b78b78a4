"""How long `tracker backup` and `tracker restore` take on a home of a given size.

    python benchmarks/bench_backup.py [--points 1000000] [--artifact-mb 50] [--database-url URL]

Builds a fresh home (embedded SQLite, or the given PostgreSQL database, which must be empty),
fills it with runs, metric points and artifacts through tracker's API, then times the console
script as an operator runs it: `tracker backup` (to .tar and .tar.gz) and `tracker restore`
into another fresh home (or a second PostgreSQL database, `<name>_restore`). Wall times include
process start-up (about a second on this machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TRACKER = str(Path(sys.executable).with_name("tracker"))

SEED = """
    import os, sys, time, tracker
    tracker.configure(quiet=True)
    points, mb = int(sys.argv[1]), int(sys.argv[2])
    runs = 10
    t = time.perf_counter()
    for r in range(runs):
        with tracker.start_run(project="bench", name=f"run-{r}", params={"r": r}) as run:
            for step in range(points // runs):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
            if mb:
                run.flush()  # the points first, so the artifact copy is timed apart from them
                run.log_artifact(os.urandom(mb * 1024 * 1024 // runs), name="weights.bin")
    print(f"seeded {points:,} points and {mb} MB of artifacts in {time.perf_counter() - t:.1f} s")
"""


def timed(args: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run([TRACKER, *args], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"tracker {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return elapsed


def pg_target(url: str) -> str:
    import psycopg

    base, name = url.rsplit("/", 1)
    target = f"{name}_restore"
    with psycopg.connect(f"{base}/postgres".replace("postgres://", "postgresql://", 1), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{target}"')
    return f"{base}/{target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--artifact-mb", type=int, default=50)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: embedded SQLite)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracker-bench-backup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "DJANGO_"))}
    env["TRACKER_HOME"] = str(work / "home")
    if args.database_url:
        env["TRACKER_DATABASE_URL"] = args.database_url
    seed = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED), str(args.points), str(args.artifact_mb)],
                          env=env, capture_output=True, text=True, check=False)
    if seed.returncode != 0:
        sys.exit(seed.stderr)
    print(seed.stdout.strip())
    backend = "postgresql" if args.database_url else "sqlite"
    for name in ("backup.tar", "backup.tar.gz"):
        seconds = timed(["backup", str(work / name)], env)
        size = (work / name).stat().st_size / 1024**2
        print(f"{backend}: tracker backup {name:<14} {seconds:6.2f} s  ({size:,.1f} MB)")
    restore_env = dict(env, TRACKER_HOME=str(work / "restored"))
    if args.database_url:
        restore_env["TRACKER_DATABASE_URL"] = pg_target(args.database_url)
    seconds = timed(["restore", str(work / "backup.tar")], restore_env)
    print(f"{backend}: tracker restore backup.tar      {seconds:6.2f} s  (with integrity, count and file checks)")
    print(f"(files under {work}; remove when done)")


if __name__ == "__main__":
    main()
