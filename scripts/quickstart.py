"""Execute notebooks/quickstart.ipynb in a real kernel, save the executed copy, print what it stored."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import os
import tempfile

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    source = ROOT / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(source, as_version=4)
    started = time.perf_counter()
    # IPC sockets in a private directory: no TCP ports opened for a local, headless run.
    km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(tempfile.mkdtemp(), "k"))
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(ROOT / "notebooks")}})
    try:
        client.execute()
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    took = time.perf_counter() - started
    out = ROOT / "notebooks" / "quickstart.executed.ipynb"
    nbformat.write(nb, out)
    print(f"Executed {source.relative_to(ROOT)} in {took:.1f} s (outputs saved to {out.relative_to(ROOT)}).")

    import tracker

    tracker.configure(quiet=True)
    from django.conf import settings

    from tracker.models import Project

    print(f"Database: {settings.DATABASES['default']['NAME']}")
    for project in tracker.projects():
        counts = _counts(project)
        print(f"Project {project.name!r}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def _counts(project) -> dict[str, int]:
    return {
        "samples": project.samples.count(),
        "datasets": project.datasets.count(),
        "runs": project.runs.count(),
        "annotation tasks": project.annotation_tasks.count(),
    }


if __name__ == "__main__":
    sys.exit(main())
