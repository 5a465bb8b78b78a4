"""Concurrent writers: two processes writing to one database at once lose nothing, fail never."""

from __future__ import annotations

from processes import start_python
from tracker.models import Sample

WRITER = """
    import os, tracker
    tracker.configure()
    tag = os.environ["WRITER"]
    for i in range(300):
        tracker.add_samples("shared", [{"id": f"{tag}-{i}-{j}", "i": i} for j in range(5)])
"""


def test_two_processes_write_at_once_nothing_lost(subprocess_env):
    procs = [start_python(WRITER, dict(subprocess_env, WRITER=f"w{n}")) for n in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("locked" not in err for _, err in outs)
    assert Sample.objects.filter(project__name="shared").count() == 2 * 300 * 5
