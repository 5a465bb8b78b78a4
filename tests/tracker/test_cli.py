"""The `tracker` console script, run as a subprocess the way people and scripts run it.

Every command runs here through `.venv/bin/tracker` against the test's database (the data is
made in the test and committed, so the child sees it). Errors must be one line on stderr with
the documented exit code, and a traceback only with --verbose.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import tracker
from tracker.management.base import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]
TRACKER = str(Path(sys.executable).with_name("tracker"))
VERBS = ("init", "doctor", "serve", "createuser", "token", "backup", "restore", "gc", "import-samples",
         "export-dataset", "datasets", "runs", "run show", "runs compare", "export-labels", "import-labels")


def cli(args: list[str], env: dict[str, str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACKER, *args], env=env, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == EXIT_OK, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, f"exit {proc.returncode}, wanted {code}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert ": error: " in lines[0]
    return lines[0]


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """A process environment with a fresh (not yet existing) home and no database URL."""
    env = dict(os.environ)
    env["TRACKER_HOME"] = str(tmp_path / "home")
    for key in ("TRACKER_DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        env.pop(key, None)
    return env


# ------------------------------------------------------------------------------------- help


def test_help_lists_every_command_and_exit_codes_without_touching_a_home(bare_env):
    out = ok(cli(["--help"], bare_env)).stdout
    for verb in VERBS:
        assert f"\n  {verb} " in out, verb
    assert "exit codes:" in out and "--database-url" in out
    assert not Path(bare_env["TRACKER_HOME"]).exists()


@pytest.mark.parametrize("verb", VERBS)
def test_each_command_help_shows_an_example(bare_env, verb):
    out = ok(cli([*verb.split(), "--help"], bare_env)).stdout
    assert out.startswith(f"usage: tracker {verb}")
    assert "examples:\n  tracker" in out and "exit codes:" in out and "--json" in out
    assert "--settings" not in out and "--pythonpath" not in out
    assert not Path(bare_env["TRACKER_HOME"]).exists()


def test_help_verb_version_and_unknown_commands(bare_env):
    assert ok(cli(["help", "runs", "compare"], bare_env)).stdout.startswith("usage: tracker runs compare")
    assert ok(cli(["--version"], bare_env)).stdout.strip() == f"tracker {tracker.__version__}"
    line = one_line_error(cli(["import-sample", "p", "x.csv"], bare_env), EXIT_USAGE)
    assert "Did you mean 'import-samples'" in line
    one_line_error(cli(["--colour", "runs"], bare_env), EXIT_USAGE)
    # two-word verbs also work hyphenated and with underscores (as in manage.py)
    assert ok(cli(["run-show", "--help"], bare_env)).stdout.startswith("usage: tracker run show")
    assert ok(cli(["runs_compare", "--help"], bare_env)).stdout.startswith("usage: tracker runs compare")


# --------------------------------------------------------------------------- init and doctor


def test_init_then_doctor_in_a_new_home(bare_env, tmp_path):
    home = tmp_path / "elsewhere"
    out = ok(cli(["--home", str(home), "init"], bare_env)).stdout
    assert str(home / "tracker.sqlite3") in out and "created" in out
    assert (home / "tracker.sqlite3").exists() and (home / "files").is_dir()
    again = json.loads(ok(cli(["--home", str(home), "init", "--json"], bare_env)).stdout)
    assert again["created"] is False and again["migrations_applied"] == []
    doctor = json.loads(ok(cli([f"--home={home}", "doctor", "--json"], bare_env)).stdout)
    assert doctor["ok"] is True
    assert {c["name"]: c["status"] for c in doctor["checks"]}["migrations"] == "ok"


def test_doctor_reports_missing_migrations_with_the_fix(bare_env):
    proc = cli(["doctor", "--no-kernel"], bare_env)
    assert proc.returncode == EXIT_FAILED, proc.stdout + proc.stderr
    assert "FAIL  migrations" in proc.stdout and "fix: Run `tracker init`" in proc.stdout
    assert "1 check(s) failed: migrations." in proc.stdout


def test_doctor_reports_an_unreachable_database(bare_env):
    proc = cli(["--database-url", "postgres://nobody@127.0.0.1:1/nothing", "doctor", "--json", "--no-kernel"],
               bare_env)
    assert proc.returncode == EXIT_FAILED
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["database"]["status"] == "fail" and "TRACKER_DATABASE_URL" in checks["database"]["fix"]
    assert checks["migrations"]["status"] == "skip"


def test_doctor_warns_when_the_python3_kernel_is_another_interpreter(bare_env, tmp_path):
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "System Python", "language": "python"}))
    env = dict(bare_env, JUPYTER_PATH=str(tmp_path / "jupyter"), JUPYTER_DATA_DIR=str(tmp_path / "nodata"))
    ok(cli(["init"], env))
    out = ok(cli(["doctor"], env)).stdout
    assert "WARN  kernel" in out and "runs /usr/bin/python3" in out
    fix = out[out.index("fix: Register this interpreter"):]
    assert fix.split()[7].startswith(f"{Path(sys.executable).parent}/python")  # the venv's own
    assert "-m ipykernel install --user --name tracker" in fix


def test_configuration_and_connection_errors_exit_3(bare_env):
    line = one_line_error(cli(["--database-url", "mysql-ish:nonsense", "runs"], bare_env), EXIT_ENVIRONMENT)
    assert "database URL" in line
    line = one_line_error(cli(["--database-url", "postgres://nobody@127.0.0.1:1/x", "runs"], bare_env),
                          EXIT_ENVIRONMENT)
    assert "Cannot reach the database" in line and "tracker doctor" in line


def test_errors_before_the_command_runs_follow_json_and_verbose(bare_env, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    proc = cli(["--home", str(a_file), "init", "--json"], bare_env)
    error = json.loads(proc.stderr)
    assert proc.returncode == EXIT_ENVIRONMENT and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert set(error) == {"error", "exit_code"} and error["exit_code"] == EXIT_ENVIRONMENT
    assert error["error"].startswith("Cannot create the tracker home")
    proc = cli(["--home", str(a_file), "init", "--verbose"], bare_env)
    assert proc.returncode == EXIT_ENVIRONMENT and "Traceback" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("tracker init: error: Cannot create the tracker home")
    assert json.loads(cli(["no-such-verb", "--json"], bare_env).stderr)["exit_code"] == EXIT_USAGE
    assert json.loads(cli(["--colour", "runs", "--json"], bare_env).stderr)["exit_code"] == EXIT_USAGE


# Bad input for every command: (arguments, exit code, part of the message). {tmp} is the test's
# directory, holding a-file (an empty file), bad.csv (an unclosed quote on line 3) and broken.json.
BAD_INPUT = {
    "init": (["--home", "{tmp}/a-file", "init"], EXIT_ENVIRONMENT, "Cannot create the tracker home"),
    "doctor": (["--database-url", "mysql-ish:nonsense", "doctor"], EXIT_ENVIRONMENT, "Cannot read the database URL"),
    "serve": (["serve", "--workers", "0"], EXIT_USAGE, "--workers must be at least 1"),
    "createuser": (["createuser", "eve", "--password-stdin"], EXIT_USAGE, "read an empty password"),
    "token": (["token", "nobody"], EXIT_USAGE, "There is no user 'nobody'"),
    "backup": (["backup", "{tmp}/b.zip"], EXIT_USAGE, "Name the backup file .tar or .tar.gz"),
    "restore": (["restore", "{tmp}/missing.tar"], EXIT_USAGE, "does not exist"),
    "gc": (["gc", "--grace", "-1"], EXIT_USAGE, "--grace must be 0 or more seconds"),
    "import-samples": (["import-samples", "p", "{tmp}/bad.csv"], EXIT_USAGE, "line 3: is not valid CSV"),
    "export-dataset": (["export-dataset", "nope", "{tmp}/x.csv"], EXIT_USAGE, "There is no dataset named 'nope'"),
    "datasets": (["datasets", "nope"], EXIT_USAGE, "There is no dataset named 'nope'"),
    "runs": (["runs", "--metric", "acc"], EXIT_USAGE, "needs an operator"),
    "run show": (["run", "show", "ffffffff"], EXIT_USAGE, "There is no run with id 'ffffffff'"),
    "runs compare": (["runs", "compare", "ffffffff", "eeeeeeee"], EXIT_USAGE, "There is no run with id"),
    "export-labels": (["export-labels", "nope", "{tmp}/x.jsonl", "--task", "t"], EXIT_USAGE,
                      "There is no project named 'nope'"),
    "import-labels": (["import-labels", "p", "{tmp}/broken.json"], EXIT_USAGE, "is not valid JSON"),
}


def test_bad_input_covers_every_command():
    assert set(BAD_INPUT) == set(VERBS)


@pytest.mark.parametrize("verb", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_a_documented_exit_code(subprocess_env, tmp_path, verb):
    from tracker.models import Project

    (tmp_path / "a-file").write_text("")
    (tmp_path / "bad.csv").write_text('id,text\na,x\nb,"never closed\n')
    (tmp_path / "broken.json").write_text("{not json")
    before = sorted(p.name for p in tmp_path.iterdir())
    template, code, fragment = BAD_INPUT[verb]
    args = [a.replace("{tmp}", str(tmp_path)) for a in template]
    proc = cli(args, subprocess_env, input="")
    line = one_line_error(proc, code)
    assert line.startswith(f"tracker {verb}: error: ") and fragment in line
    assert proc.stdout == ""
    proc = cli([*args, "--json"], subprocess_env, input="")
    assert proc.returncode == code and "Traceback" not in proc.stderr
    error = json.loads(proc.stderr)  # one JSON document on one line
    assert proc.stderr.count("\n") == 1 and error["exit_code"] == code and fragment in error["error"]
    if proc.stdout:  # import-samples --json prints the rejection report (every bad row)
        assert verb == "import-samples" and json.loads(proc.stdout)["stored"] is False
    # nothing was written: no file, no project
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Project.objects.exists()


# ------------------------------------------------------------------------------------- serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("options", "server", "why", "log_line"),
    [
        ([], "granian", "the default where it is installed", "Starting granian"),
        (["--server", "gunicorn"], "gunicorn", "gunicorn, as --server asked", "Using worker: gthread"),
        (["--server", "uvicorn", "--json"], "uvicorn", "uvicorn with httptools, as --server asked",
         "Uvicorn running on"),
    ],
    ids=["default", "explicit-gunicorn", "explicit-uvicorn"],
)
def test_serve_answers_then_stops_on_ctrl_c(subprocess_env, options, server, why, log_line):
    import requests

    port = _free_port()
    proc = subprocess.Popen([TRACKER, "serve", "--port", str(port), *options], env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                # the first request builds the schema: slow on a busy machine
                resp = requests.get(f"http://127.0.0.1:{port}/api/schema/", timeout=60)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert resp.status_code == 200 and "openapi" in resp.text
        assert requests.get(f"http://127.0.0.1:{port}/api/projects/", timeout=60).status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_OK, err
    first = err.splitlines()[0]  # which server and why, in one line, before the server's own log
    assert first.startswith(f"Serving tracker at http://127.0.0.1:{port}/api/") and f"with {server}" in first
    assert why in first and log_line in err
    if "--json" in options:
        assert json.loads(out) == {"server": server, "exit_code": 0}
    else:
        assert out == ""


def test_serve_bad_input(subprocess_env):
    one_line_error(cli(["serve", "--port", "0"], subprocess_env), EXIT_USAGE)
    line = one_line_error(cli(["serve", "--server", "nginx"], subprocess_env), EXIT_USAGE)
    assert "invalid choice: 'nginx'" in line


# ---------------------------------------------------------------------------- users, tokens


def test_createuser_and_token(subprocess_env):
    from tracker.services import access

    user = json.loads(ok(cli(["createuser", "carol", "--token", "ci", "--json"], subprocess_env)).stdout)
    assert access.authenticate_token(user["token"]["key"])[0].username == "carol"
    proc = ok(cli(["createuser", "dave", "--password-stdin"], subprocess_env, input="pw-of-dave\n"))
    assert "password  set" in proc.stdout
    key = json.loads(ok(cli(["token", "dave", "--name", "laptop", "--json"], subprocess_env)).stdout)["key"]
    listed = json.loads(ok(cli(["token", "--list", "--json"], subprocess_env)).stdout)
    assert sorted((t["user"], t["name"]) for t in listed) == [("carol", "ci"), ("dave", "laptop")]
    ok(cli(["token", "--revoke", key[:12]], subprocess_env))
    assert access.authenticate_token(key) is None
    line = one_line_error(cli(["createuser", "carol", "--no-password"], subprocess_env), EXIT_FAILED)
    assert "already exists" in line
    one_line_error(cli(["token", "nobody"], subprocess_env), EXIT_USAGE)


# ------------------------------------------------------------------- samples and datasets


def test_import_samples_good_bad_and_verbose(subprocess_env, tmp_path):
    from tracker.models import Sample

    good = tmp_path / "good.csv"
    good.write_text("id,text\na,one\nb,two\n")
    out = ok(cli(["import-samples", "cli", str(good)], subprocess_env)).stdout
    assert "2 created" in out
    again = json.loads(ok(cli(["import-samples", "cli", str(good), "--json"], subprocess_env)).stdout)
    assert (again["created"], again["unchanged"], again["stored"]) == (0, 2, True)
    bad = tmp_path / "bad.csv"
    bad.write_text('id,text\na,changed\nc,"open quote\n')
    line = one_line_error(cli(["import-samples", "cli", str(bad)], subprocess_env), EXIT_USAGE)
    assert "line 3" in line and "nothing was imported" in line
    assert Sample.objects.get(project__name="cli", external_id="a").data == {"text": "one"}
    line = one_line_error(cli(["import-samples", "cli", str(tmp_path / "missing.csv")], subprocess_env), EXIT_USAGE)
    assert "does not exist" in line
    verbose = cli(["import-samples", "cli", str(bad), "--verbose"], subprocess_env)
    assert verbose.returncode == EXIT_USAGE
    assert "Traceback" in verbose.stderr and verbose.stderr.rstrip().splitlines()[-1].startswith("tracker import-samples: error:")
    as_json = cli(["import-samples", "cli", str(bad), "--json"], subprocess_env)
    assert as_json.returncode == EXIT_USAGE
    assert json.loads(as_json.stderr)["exit_code"] == EXIT_USAGE
    assert json.loads(as_json.stdout)["errors"][0]["where"] == "line 3"


def test_ctrl_c_during_an_import_exits_130_and_stores_nothing(subprocess_env, tmp_path):
    from tracker.models import Project

    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write("id,text,n\n")
        fh.writelines(f"r{i},text of row {i},{i}\n" for i in range(1_000_000))
    # SIG_DFL: a runner started in the background has SIGINT ignored, which children inherit,
    # and Python then installs no KeyboardInterrupt handler (a terminal's Ctrl-C has it).
    proc = subprocess.Popen([TRACKER, "import-samples", "big", str(path), "--progress"], env=subprocess_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    try:
        while b"import big.csv" not in seen:  # the bar: the import has begun
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, (proc.wait(), seen)
            seen += chunk
        time.sleep(1.0)  # well into writing the rows
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = (seen + err).decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == b""
    assert err.rstrip("\n").split("\r")[-1].split("\n")[-1] == "tracker import-samples: error: Interrupted."
    assert not Project.objects.filter(name="big").exists()


def test_datasets_and_export_dataset(subprocess_env, tmp_path):
    import pandas as pd

    from tracker.models import Sample

    tracker.add_samples("dsp", [{"id": f"s{i}", "v": i} for i in range(30)])
    version = tracker.create_dataset("numbers", Sample.objects.filter(project__name="dsp"),
                                     splits={"train": 0.8, "test": 0.2})
    listed = json.loads(ok(cli(["datasets", "--json"], subprocess_env)).stdout)
    assert [(d["name"], d["latest_version"], d["samples"]) for d in listed] == [("numbers", 1, 30)]
    assert "numbers" in ok(cli(["datasets"], subprocess_env)).stdout
    out = tmp_path / "test.parquet"
    ok(cli(["export-dataset", "numbers", str(out), "--split", "test"], subprocess_env))
    assert sorted(pd.read_parquet(out)["id"]) == sorted(version.to_pandas(split="test")["id"])
    line = one_line_error(cli(["export-dataset", "nope", str(tmp_path / "n.parquet")], subprocess_env), EXIT_USAGE)
    assert "no dataset named 'nope'" in line


def cli_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the script with stderr on a pseudo-terminal, as in an interactive shell: (exit code,
    stdout, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    # A terminal has a size (a new pseudo-terminal's is 0x0, where tqdm draws nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([TRACKER, *args], env=env, stdout=subprocess.PIPE, stderr=slave, text=True,
                              check=False, timeout=120)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, proc.stdout, shown.decode("utf-8", "replace")


def test_export_dataset_progress_bar(subprocess_env, tmp_path):
    from tracker.models import Sample

    tracker.add_samples("bar", [{"id": f"s{i}", "v": i} for i in range(300)])
    tracker.create_dataset("bars", Sample.objects.filter(project__name="bar"), progress=False)
    label = "export dataset 'bars' v1"
    # asked for: on stderr even when it is no terminal, whatever stdout holds
    proc = ok(cli(["export-dataset", "bars", str(tmp_path / "a.jsonl"), "--progress", "--json"], subprocess_env))
    assert label in proc.stderr and "/300" in proc.stderr and json.loads(proc.stdout)["rows"] == 300
    proc = ok(cli(["export-dataset", "bars", str(tmp_path / "b.jsonl")], subprocess_env))
    assert proc.stderr == "" and proc.stdout.startswith("Wrote dataset 'bars' v1: 300 rows")
    # on a terminal: shown by default; never with --json or --quiet unless asked
    code, out, shown = cli_on_a_terminal(["export-dataset", "bars", str(tmp_path / "c.csv")], subprocess_env)
    assert code == EXIT_OK and label in shown and out.startswith("Wrote dataset 'bars' v1")
    code, out, shown = cli_on_a_terminal(["export-dataset", "bars", str(tmp_path / "d.csv"), "--json"], subprocess_env)
    assert code == EXIT_OK and shown == "" and json.loads(out)["rows"] == 300
    code, out, shown = cli_on_a_terminal(["export-dataset", "bars", str(tmp_path / "e.csv"), "-q"], subprocess_env)
    assert (code, out, shown) == (EXIT_OK, "", "")
    code, out, shown = cli_on_a_terminal(
        ["export-dataset", "bars", str(tmp_path / "f.csv"), "--no-progress"], subprocess_env)
    assert code == EXIT_OK and shown == ""
    assert [len(pd.read_csv(tmp_path / f"{n}.csv")) for n in "cdef"] == [300] * 4


# -------------------------------------------------------------------------------------- runs


def test_runs_run_show_and_compare(subprocess_env):
    ids = []
    for lr in (0.1, 0.2):
        with tracker.start_run(project="cli-runs", name=f"lr-{lr}", params={"lr": lr}) as r:
            r.log_metrics({"loss": 1 - lr, "acc": lr}, step=0)
            ids.append(r.id)
    # Run rows are written by this process's flusher; a read here writes them now, so the
    # child processes below see them.
    tracker.runs_frame(project="cli-runs")
    rows = json.loads(ok(cli(["runs", "--project", "cli-runs", "--json"], subprocess_env)).stdout)
    assert {r["id"] for r in rows} == set(ids)
    text = ok(cli(["runs", "--param", "lr>0.15"], subprocess_env)).stdout
    assert "lr-0.2" in text and "lr-0.1" not in text
    shown = json.loads(ok(cli(["run", "show", ids[0], "--json"], subprocess_env)).stdout)
    assert shown["params"] == {"lr": 0.1} and {m["key"] for m in shown["metrics"]} == {"loss", "acc"}
    text = ok(cli(["runs", "compare", *ids], subprocess_env)).stdout
    assert text.splitlines()[0].split() == ["lr-0.1", "lr-0.2"] and "params.lr" in text
    compared = json.loads(ok(cli(["runs", "compare", *ids, "--diff", "--json"], subprocess_env)).stdout)
    rows = {r["field"]: r for r in compared["rows"]}
    assert compared["runs"] == ["lr-0.1", "lr-0.2"] and rows["params.lr"]["lr-0.2"] == 0.2
    line = one_line_error(cli(["run", "show", "ffffffffffff"], subprocess_env), EXIT_USAGE)
    assert "no run with id" in line


# ------------------------------------------------------------------------------------ labels


def test_export_and_import_labels(subprocess_env, tmp_path):
    from tracker.models import Sample

    tracker.add_samples("lab", [{"id": "a", "text": "yes"}, {"id": "b", "text": "no"}])
    tracker.define_task("lab", "answer", "classification", ["y", "n"])
    for s in Sample.objects.filter(project__name="lab"):
        tracker.annotate(s, "answer", "y" if s.external_id == "a" else "n", "ann")
    ls = tmp_path / "ls.json"
    ok(cli(["export-labels", "lab", str(ls)], subprocess_env))
    assert len(json.loads(ls.read_text())) == 2
    csv_path = tmp_path / "labels.csv"
    written = json.loads(ok(cli(["export-labels", "lab", str(csv_path), "--task", "answer", "--json"],
                                subprocess_env)).stdout)
    assert (written["rows"], written["format"], written["path"]) == (2, "csv", str(csv_path.resolve()))
    assert csv_path.read_text().count("\n") == 3
    result = json.loads(ok(cli(["import-labels", "lab-copy", str(ls), "--json"], subprocess_env)).stdout)
    assert result["annotations"] == 2
    assert sorted(tracker.annotation_table("lab-copy", "answer")["value"]) == ["n", "y"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    one_line_error(cli(["import-labels", "lab", str(broken)], subprocess_env), EXIT_USAGE)


# ---------------------------------------------------------------------------- gc and manage.py


def test_gc_through_the_script(subprocess_env):
    report = json.loads(ok(cli(["gc", "--json"], subprocess_env)).stdout)
    assert report["deleted"] is False and report["blobs"] == []
    assert "Removed 0 unreferenced blobs" in ok(cli(["gc", "--delete"], subprocess_env)).stdout


def test_manage_py_runs_the_same_commands(subprocess_env):
    proc = subprocess.run([sys.executable, str(ROOT / "manage.py"), "tracker_doctor", "--no-kernel", "--json"],
                          env=subprocess_env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    proc = subprocess.run([sys.executable, str(ROOT / "manage.py"), "tracker_run_show", "nope"],
                          env=subprocess_env, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == EXIT_USAGE and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("manage.py tracker_run_show: error:")
