"""Run every bad input of docs/FAULTS.md through the notebook API and print what users see."""

import datetime as dt
import tempfile
from pathlib import Path

home = Path(tempfile.mkdtemp())
import tracker

tracker.configure(home=home, quiet=True)
import numpy as np
import pandas as pd

rows = []


def tryit(area, what, fn):
    try:
        fn()
        rows.append((area, what, "accepted", ""))
    except Exception as e:  # noqa: BLE001 - anything not a TrackerError is a finding
        rows.append(
            (area, what, type(e).__name__, str(e).replace("\n", " ").replace("|", "\\|")[:300])
        )


run = tracker.start_run("catalogue")
for v, d in [
    ("0.5", "string '0.5'"),
    (None, "None"),
    (True, "bool True"),
    ([1, 2], "list"),
    (np.array([1.0, 2.0]), "numpy array"),
    (1j, "complex"),
    (10**400, "int 10**400 (huge)"),
]:
    tryit("metric value", d, lambda v=v: run.log_metric("loss", v))
for s, d in [
    (1.5, "float step"),
    ("3", "string step"),
    (2**70, "step 2**70"),
    (-1, "negative step"),
]:
    tryit("metric step", d, lambda s=s: run.log_metric("loss", 1.0, step=s))
for k, d in [
    ("", "empty key"),
    (3, "int key"),
    ("a\nb", "newline in key"),
    ("x" * 251, "251-char key"),
    ("損失/ε", "unicode key"),
]:
    tryit("metric key", d, lambda k=k: run.log_metric(k, 1.0))
for v, d in [(float("nan"), "NaN"), (float("inf"), "inf"), (1e308 * 10, "overflow to inf")]:
    tryit("metric value", d, lambda v=v: run.log_metric("edge", v))
for p, d in [
    ({"lr": float("nan")}, "NaN param"),
    ({"when": dt.date(2024, 1, 1)}, "date param"),
    ({"a": {"b": 1}, "a.b": 2}, "same flattened key twice"),
    ({"": 1}, "empty param name"),
    ({"x" * 300: 1}, "300-char param name"),
    ([("lr", 1)], "list instead of dict"),
]:
    tryit("params", d, lambda p=p: run.log_params(p))
run.log_param("seed", 1)
tryit("params", "changing a logged param", lambda: run.log_param("seed", 2))
for n, d in [
    ("/etc/passwd", "absolute path"),
    ("../../escape.txt", "'..' escape"),
    ("C:\\m.pt", "backslash"),
    ("", "empty name"),
    ("x" * 501, "501-char name"),
    ("bad\nname", "control character"),
]:
    tryit("artifact name", d, lambda n=n: run.log_artifact(b"data", name=n))
tryit("artifact", "dict object", lambda: run.log_artifact({"a": 1}, name="a.json"))
tryit("artifact", "missing file path", lambda: run.log_artifact("/nonexistent/file.txt"))
tryit("artifact", "bytes without a name", lambda: run.log_artifact(b"x"))
tryit(
    "artifact",
    "unicode name 'résumé/模型.pt'",
    lambda: run.log_artifact(b"x", name="résumé/模型.pt"),
)
run.log_artifact(b"v1", name="m.pt")
tryit("artifact", "same name, other bytes", lambda: run.log_artifact(b"v2", name="m.pt"))
tryit("run", "finish with bad status", lambda: run.finish(status="done"))
run.finish()
tryit("run lookup", "unknown id", lambda: tracker.get_run("zzzzzz"))
tmp = Path(tempfile.mkdtemp())
(tmp / "empty.csv").write_text("")
(tmp / "empty.jsonl").write_text("")
(tmp / "bad.csv").write_text('id,text\n1,"unterminated\n2,ok,extra\n')
(tmp / "bad.jsonl").write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n[1,2]\n')
(tmp / "bad.parquet").write_bytes(b"PAR1garbage")
(tmp / "dup.csv").write_text("id,text\n1,a\n1,b\n")
(tmp / "noid.csv").write_text("id,text\n,a\n2,b\n")
(tmp / "latin1.csv").write_bytes("id,text\n1,caf\xe9\n".encode("latin-1"))
(tmp / "data.txt").write_text("id\n1\n")
for f, d in [
    ("empty.csv", "empty CSV file"),
    ("empty.jsonl", "empty JSONL file"),
    ("bad.csv", "malformed CSV"),
    ("bad.jsonl", "malformed JSONL (broken line, non-object)"),
    ("bad.parquet", "corrupt Parquet"),
    ("dup.csv", "duplicate ids in CSV"),
    ("noid.csv", "empty id"),
    ("latin1.csv", "non-UTF-8 CSV"),
    ("data.txt", "unknown extension"),
    ("missing.csv", "missing file"),
]:
    tryit("import", d, lambda f=f: tracker.import_samples("cat", str(tmp / f)))
tryit(
    "import",
    "id_field not a column",
    lambda: tracker.import_samples("cat", [{"id": 1}], id_field="uid"),
)
tryit(
    "import", "duplicate ids in list", lambda: tracker.import_samples("cat", [{"id": 1}, {"id": 1}])
)
tryit(
    "import",
    "set value in a record",
    lambda: tracker.import_samples("cat", [{"id": 1, "x": {1, 2}}]),
)
tryit(
    "import", "bad on_error", lambda: tracker.import_samples("cat", [{"id": 1}], on_error="ignore")
)
tryit(
    "import",
    "NaN/inf in a DataFrame",
    lambda: tracker.import_samples(
        "cat", pd.DataFrame({"id": [1, 2], "x": [float("inf"), float("nan")]})
    ),
)
tracker.import_samples("cat", [{"id": str(i), "text": f"t{i}"} for i in range(10)])
tryit(
    "dataset",
    "splits adding to 0.9",
    lambda: tracker.create_dataset(
        "d", tracker.get_project("cat").samples.all(), splits={"train": 0.8, "val": 0.1}
    ),
)
tryit("dataset", "string instead of queryset", lambda: tracker.create_dataset("d", "cat"))
tryit(
    "dataset",
    "blank name",
    lambda: tracker.create_dataset(" ", tracker.get_project("cat").samples.all()),
)
tryit("dataset lookup", "unknown dataset", lambda: tracker.get_dataset("nope"))
tryit("labeling", "unknown task kind", lambda: tracker.define_task("cat", "t0", "colour", ["a"]))
tracker.define_task("cat", "sent", "classification", ["pos", "neg"])
tryit(
    "labeling",
    "unknown label",
    lambda: tracker.annotate("1", tracker.get_task("cat", "sent"), "maybe", annotator="ana"),
)
tryit(
    "labeling",
    "list for classification",
    lambda: tracker.annotate("1", tracker.get_task("cat", "sent"), ["pos"], annotator="ana"),
)
tryit(
    "labeling",
    "unknown sample id",
    lambda: tracker.annotate("nope", tracker.get_task("cat", "sent"), "pos", annotator="ana"),
)
tracker.define_task("cat", "sp", "spans", ["PER"], text_field="text")
tryit(
    "labeling",
    "span past the text end",
    lambda: tracker.annotate(
        "1",
        tracker.get_task("cat", "sp"),
        [{"start": 0, "end": 99, "label": "PER"}],
        annotator="ana",
    ),
)
tryit(
    "labeling",
    "duplicate label names",
    lambda: tracker.define_task("cat", "dup", "classification", ["a", "a"]),
)
print("| area | bad input | exception | what the user sees |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
