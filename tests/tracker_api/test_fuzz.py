"""schemathesis against the live OpenAPI schema of a real server process: >= 1000 generated
requests, no 5xx, every response (status, content type, headers, body) matching the schema,
and no operation answering without authentication."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api_support import start_server, stop_server

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    ]
)


def _seed_data():
    from tracker.services import access
    from tracker.services.samples import add_samples

    fuzzer = access.create_user("fuzzer", is_staff=True)
    project = access.create_project("fuzz", fuzzer)
    add_samples(project, [{"id": str(i), "text": f"sample {i}"} for i in range(20)])
    from tracker.models import Sample
    from tracker.services.datasets import create_dataset
    from tracker.services.labeling import add_predictions, annotate, define_task

    create_dataset("fuzz-ds", Sample.objects.filter(project=project), project=project, splits={"train": 0.5, "test": 0.5}, progress=False)
    task = define_task(project, "sentiment", "classification", ["pos", "neg"])
    annotate("1", task, "pos", annotator=fuzzer)
    add_predictions(project, task, [{"external_id": str(i), "value": "neg", "score": 0.3} for i in range(5)])
    import tempfile
    import time

    from tracker.models import Run
    from tracker.services.artifacts import log_artifact
    from tracker_api.views.runs import sink_write

    run = Run.objects.create(project=project, name="fuzz-run")
    sink_write(run.pk, [("loss", i, 1.0 / (i + 1), time.time()) for i in range(50)], None)
    with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
        fh.write(b"weights")
        fh.flush()
        log_artifact(run, fh.name, name="model.bin")
    for hook in SEED_HOOKS:
        hook(project, fuzzer)
    return access.create_token(fuzzer, name="fuzz")[1]


# Domains that land later add objects for the fuzzer to find.
SEED_HOOKS: list = []


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(subprocess_env, tmp_path: Path):
    key = _seed_data()
    # Under ASGI (uvicorn): the remote-mode tests run the default WSGI server (granian) and the
    # revocation test gunicorn, so every way of serving sees real HTTP.
    server = start_server(subprocess_env, server="uvicorn", workers=2)
    try:
        examples = os.environ.get("TRACKER_FUZZ_EXAMPLES", "30")
        cmd = [
            str(Path(sys.executable).with_name("st")), "run", f"{server.url}/api/schema/?format=json",
            "-H", f"Authorization: Bearer {key}",
            "--max-examples", examples,
            "--checks", CHECKS,
            "--seed", os.environ.get("TRACKER_FUZZ_SEED", "6"),
            "--generation-deterministic",
            "--request-timeout", "30",
            "--workers", "2",
            "--no-color",
            "--report", "json", "--report-dir", str(tmp_path),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    finally:
        stop_server(server)
        log = Path(server.log).read_text()
    report = json.loads(Path(glob.glob(str(tmp_path / "*.json"))[0]).read_text())
    generated = report["test_cases"]["generated"]
    print(f"schemathesis: {generated} generated requests, {report['operations']['tested']} operations")
    text = out.stdout
    start = text.find("___")
    failures = text[start : text.find("WARNINGS", start)] if start >= 0 else ""
    summary = f"{failures[:8000]}\n{text[-2500:]}\n--- server log ---\n{log[-6000:]}"
    assert report["operations"]["tested"] == report["operations"]["total"], summary
    assert generated >= 1000, summary
    assert report["failures"] == [] and report["errors"] == [], summary
    assert out.returncode == 0, summary
    assert "Traceback" not in log, log[-3000:]
