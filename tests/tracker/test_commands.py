"""Management commands through ``call_command``: results, --json, and bad input as clean errors.

Every command runs here in-process; ``test_cli.py`` runs each one again through the console
script. A failure raises ``CommandError`` with the documented exit code (``returncode``) and a
one-line message; nothing already stored changes.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from django.core.management import CommandError, call_command

import tracker
from tracker.management.base import EXIT_FAILED, EXIT_USAGE


def run(command: str, /, *args: str, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def run_json(command: str, /, *args: str, **options):
    out, _ = run(command, *args, json=True, **options)
    return json.loads(out)


def fails(command: str, /, *args: str, **options) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(command, *args, **options)
    err = info.value
    assert "\n" not in str(err), f"error message spans lines: {err}"
    return err


# ------------------------------------------------------------------------------ init, doctor


@pytest.mark.django_db
def test_init_reports_database_and_storage(tracker_home):
    data = run_json("tracker_init")
    assert data["migrations_applied"] == []
    assert data["created"] is False
    from django.db import connection

    assert data["database"]["vendor"] == connection.vendor
    assert data["home"] == str(tracker_home.resolve())
    text, _ = run("tracker_init")
    assert "tracker is ready." in text and "already up to date" in text


@pytest.mark.django_db
def test_doctor_passes_on_a_working_setup():
    data = run_json("tracker_doctor", no_kernel=True)
    by_name = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is True
    for name in ("settings", "database", "migrations", "storage"):
        assert by_name[name]["status"] == "ok", by_name[name]
    assert "kernel" not in by_name


@pytest.mark.django_db
def test_doctor_reports_unwritable_storage_with_a_fix(tmp_path, settings):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage directory should be")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker / "files")},
        },
    }
    err = fails("tracker_doctor", no_kernel=True)
    assert err.returncode == EXIT_FAILED
    assert "storage" in str(err)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("tracker_doctor", no_kernel=True, stdout=out)
    text = out.getvalue()
    assert "FAIL  storage" in text
    assert "fix: Make the storage location writable" in text


@pytest.mark.django_db
def test_doctor_kernel_check_names_this_interpreter():
    data = run_json("tracker_doctor")
    kernel = {c["name"]: c for c in data["checks"]}["kernel"]
    assert kernel["status"] in ("ok", "warn")
    assert "ipykernel" in kernel["detail"]


# ------------------------------------------------------------------------- users and tokens


@pytest.mark.django_db
def test_createuser_and_token_lifecycle():
    from tracker.services import access

    user = run_json("tracker_createuser", "alice", token="laptop", no_password=True)
    assert user["username"] == "alice" and user["has_password"] is False
    key = user["token"]["key"]
    assert access.authenticate_token(key)[0].username == "alice"

    made = run_json("tracker_token", "alice", name="ci", expires_in="2h")
    assert made["key"].startswith("trk_") and made["expires_at"]
    listed = run_json("tracker_token", "alice", list_tokens=True)
    assert sorted(t["name"] for t in listed) == ["ci", "laptop"]
    assert all("key" not in t for t in listed)

    text, _ = run("tracker_token", revoke=made["prefix"])
    assert "Revoked" in text
    assert access.authenticate_token(made["key"]) is None
    assert access.authenticate_token(key) is not None


@pytest.mark.django_db
def test_createuser_and_token_bad_input():
    run("tracker_createuser", "bob", no_password=True)
    assert fails("tracker_createuser", "bob", no_password=True).returncode == EXIT_FAILED  # exists
    assert fails("tracker_token", "nobody").returncode == EXIT_USAGE
    assert fails("tracker_token", "bob", expires_in="soon").returncode == EXIT_USAGE
    assert fails("tracker_token", revoke="trk_nothing").returncode == EXIT_USAGE
    assert fails("tracker_token").returncode == EXIT_USAGE


@pytest.mark.django_db
def test_createuser_superuser_with_password_from_stdin(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pass\n"))
    data = run_json("tracker_createuser", "root", superuser=True, password_stdin=True)
    assert data["is_superuser"] and data["is_staff"] and data["has_password"]
    from django.contrib.auth import get_user_model

    assert get_user_model().objects.get(username="root").check_password("s3cret-pass")


# -------------------------------------------------------------------------- import-samples


@pytest.mark.django_db
def test_import_samples_csv_then_update(tmp_path):
    from tracker.models import Sample

    path = tmp_path / "reviews.csv"
    path.write_text("review_id,text,stars\nr1,great,5\nr2,bad,1\n")
    data = run_json("tracker_import_samples", "reviews", str(path), id_field="review_id")
    assert (data["created"], data["bad"], data["rows"]) == (2, 0, 2)
    path.write_text("review_id,text,stars\nr1,great,4\nr3,ok,3\n")
    text, _ = run("tracker_import_samples", "reviews", str(path), id_field="review_id")
    assert "1 created, 1 updated" in text
    got = {s.external_id: s.data for s in Sample.objects.filter(project__name="reviews")}
    assert got == {"r1": {"text": "great", "stars": 4}, "r2": {"text": "bad", "stars": 1},
                   "r3": {"text": "ok", "stars": 3}}


@pytest.mark.django_db
def test_import_samples_malformed_csv_stores_nothing(tmp_path):
    from tracker.models import Sample

    good = tmp_path / "good.csv"
    good.write_text("id,text\na,kept\n")
    run("tracker_import_samples", "p", str(good))
    bad = tmp_path / "bad.csv"
    bad.write_text('id,text\na,changed\nb,"never closed\n')
    err = fails("tracker_import_samples", "p", str(bad))
    assert err.returncode == EXIT_USAGE
    assert "line 3" in str(err) and "--on-error skip" in str(err)
    assert {s.external_id: s.data["text"] for s in Sample.objects.filter(project__name="p")} == {"a": "kept"}


@pytest.mark.django_db
def test_import_samples_skip_reports_bad_rows(tmp_path):
    from tracker.models import Sample

    path = tmp_path / "dup.csv"
    path.write_text("id,text\na,1\nb,2\nb,3\n")
    data = run_json("tracker_import_samples", "p", str(path), on_error="skip")
    assert data["created"] == 2 and data["bad"] == 1
    assert data["errors"][0]["where"] == "line 4" and "repeats the id" in data["errors"][0]["reason"]
    text, _ = run("tracker_import_samples", "p", str(path), on_error="skip")
    assert "Skipped rows:" in text and "line 4" in text
    assert Sample.objects.filter(project__name="p").count() == 2


@pytest.mark.django_db
def test_import_samples_missing_file_and_directory(tmp_path):
    err = fails("tracker_import_samples", "p", str(tmp_path / "nope.csv"))
    assert err.returncode == EXIT_USAGE and "does not exist" in str(err)
    err = fails("tracker_import_samples", "p", str(tmp_path))
    assert err.returncode == EXIT_USAGE and "is a directory" in str(err)


@pytest.mark.django_db
def test_import_samples_json_mode_prints_the_rejection_report(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a"}\n{"id": "a"}\nnot json\n')
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("tracker_import_samples", "p", str(path), json=True, stdout=out)
    assert info.value.returncode == EXIT_USAGE
    report = json.loads(out.getvalue())
    assert report["stored"] is False and report["bad"] == 2
    assert [e["row"] for e in report["errors"]] == [2, 3]


# ---------------------------------------------------------------------------------- datasets


@pytest.fixture
def dataset(db):
    from tracker.models import Sample

    tracker.add_samples("shop", [{"id": f"s{i}", "text": f"item {i}", "price": i * 1.5} for i in range(40)])
    v1 = tracker.create_dataset("items", Sample.objects.filter(project__name="shop"),
                                splits={"train": 0.75, "test": 0.25}, description="first")
    tracker.add_samples("shop", [{"id": "s99", "text": "late", "price": 1.0}])
    v2 = tracker.create_dataset("items", Sample.objects.filter(project__name="shop"),
                                splits={"train": 0.75, "test": 0.25})
    return v1, v2


def test_datasets_lists_datasets_and_versions(dataset):
    rows = run_json("tracker_datasets")
    assert [(r["project"], r["name"], r["latest_version"], r["samples"]) for r in rows] == [("shop", "items", 2, 41)]
    versions = run_json("tracker_datasets", "items")
    assert [(v["version"], v["samples"]) for v in versions] == [(1, 40), (2, 41)]
    text, _ = run("tracker_datasets", project="shop")
    assert "items" in text and "latest" in text
    assert fails("tracker_datasets", "nope").returncode == EXIT_USAGE
    assert fails("tracker_datasets", project="no-such-project").returncode == EXIT_USAGE


@pytest.mark.parametrize("suffix", ["parquet", "jsonl", "csv"])
def test_export_dataset_writes_what_the_version_holds(dataset, tmp_path, suffix):
    v1, _ = dataset
    path = tmp_path / f"items.{suffix}"
    data = run_json("tracker_export_dataset", "items", str(path), dataset_version=1, split="train")
    assert data["rows"] == v1.counts["train"] and data["version"] == 1
    expected = v1.to_pandas(split="train")
    if suffix == "parquet":
        got = pd.read_parquet(path)
    elif suffix == "jsonl":
        got = pd.read_json(path, lines=True, dtype=False)
    else:
        got = pd.read_csv(path, dtype={"id": str})
    assert sorted(got["id"]) == sorted(expected["id"])
    assert got.set_index("id")["price"].sort_index().tolist() == expected.set_index("id")["price"].sort_index().tolist()


def test_export_dataset_bad_input(dataset, tmp_path):
    assert fails("tracker_export_dataset", "nope", str(tmp_path / "x.parquet")).returncode == EXIT_USAGE
    assert fails("tracker_export_dataset", "items", str(tmp_path / "x.parquet"), dataset_version=9).returncode == EXIT_USAGE
    assert fails("tracker_export_dataset", "items", str(tmp_path / "x.parquet"), split="val").returncode == EXIT_USAGE
    assert fails("tracker_export_dataset", "items", str(tmp_path / "x.txt")).returncode == EXIT_USAGE
    assert fails("tracker_export_dataset", "items", str(tmp_path / "no" / "x.csv")).returncode == EXIT_USAGE
    existing = tmp_path / "there.csv"
    existing.write_text("keep me")
    err = fails("tracker_export_dataset", "items", str(existing))
    assert err.returncode == EXIT_USAGE and "--force" in str(err)
    assert existing.read_text() == "keep me"
    run("tracker_export_dataset", "items", str(existing), force=True)
    assert existing.read_text().splitlines()[0].replace('"', '').startswith("id,split")


def test_export_dataset_progress_bar_when_asked_never_in_json_or_quiet(dataset, tmp_path):
    v1, v2 = dataset
    out, err = run("tracker_export_dataset", "items", str(tmp_path / "a.jsonl"), progress=True)
    assert "export dataset 'items' v2" in err and f"/{v2.sample_count}" in err and " rows" in err
    assert out.startswith("Wrote dataset 'items' v2: 41 rows")
    out, err = run("tracker_export_dataset", "items", str(tmp_path / "b.jsonl"), json=True)
    assert err == "" and json.loads(out)["rows"] == 41
    # stderr is no terminal here: no bar unless asked, and --no-progress wins over a terminal
    assert run("tracker_export_dataset", "items", str(tmp_path / "c.csv"))[1] == ""
    assert run("tracker_export_dataset", "items", str(tmp_path / "d.csv"), progress=False)[1] == ""
    out, err = run("tracker_export_dataset", "items", str(tmp_path / "e.csv"), quiet=True)
    assert (out, err) == ("", "")
    assert len(pd.read_csv(tmp_path / "e.csv")) == 41
    out, err = run("tracker_export_dataset", "items", str(tmp_path / "f.csv"), json=True, progress=True,
                   split="test", dataset_version=1)
    assert "export dataset 'items' v1" in err and json.loads(out)["rows"] == v1.counts["test"]


# -------------------------------------------------------------------------------------- runs


@pytest.fixture
def runs(transactional_db):
    made = []
    for i, lr in enumerate([0.1, 0.01, 0.001]):
        with tracker.start_run(project="exp", name=f"trial-{i}", params={"lr": lr, "opt": {"name": "adam"}},
                               tags={"stage": "prod" if i == 2 else "dev"}) as r:
            for step in range(20):
                r.log_metric("loss", 1.0 / (step + 1) + lr, step=step)
            r.log_metric("acc", 0.9 - lr)
            made.append(r.id)
    with tracker.start_run(project="other", name="elsewhere") as r:
        r.log_metric("loss", 5.0)
        made.append(r.id)
    return made


def test_runs_lists_and_filters(runs):
    rows = run_json("tracker_runs")
    assert {r["id"] for r in rows} == set(runs)
    rows = run_json("tracker_runs", project="exp", metric=["acc>0.85"], param=["opt.name=adam"])
    assert {r["name"] for r in rows} == {"trial-1", "trial-2"}
    rows = run_json("tracker_runs", tag=["stage!=prod"], project="exp")
    assert {r["name"] for r in rows} == {"trial-0", "trial-1"}
    rows = run_json("tracker_runs", param=["lr<0.05"], status=["finished"])
    assert {r["params.lr"] for r in rows} == {0.01, 0.001}
    rows = run_json("tracker_runs", name="trial-*", limit=2)
    assert len(rows) == 2
    assert rows[0]["metrics.loss"] == pytest.approx(1 / 20 + 0.001)
    text, _ = run("tracker_runs", project="exp", columns=["params.lr", "tags.stage"])
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["id", "name", "project", "status"]
    assert "params.lr" in lines[0] and "tags.stage" in lines[0] and len(lines) == 5
    assert run("tracker_runs", name="no-such-run")[0].strip() == "No runs match."


def test_runs_bad_filters(runs):
    assert fails("tracker_runs", metric=["acc"]).returncode == EXIT_USAGE
    assert fails("tracker_runs", metric=["acc>high"]).returncode == EXIT_USAGE
    assert fails("tracker_runs", since="yesterday").returncode == EXIT_USAGE
    assert fails("tracker_runs", status=["sleeping"]).returncode == EXIT_USAGE
    assert fails("tracker_runs", columns=["params.nope"]).returncode == EXIT_USAGE
    # a misspelt project is an error naming the known ones, as for `tracker datasets`
    err = fails("tracker_runs", project="no-such-project")
    assert err.returncode == EXIT_USAGE and "There is no project named 'no-such-project'" in str(err)


def test_run_show(runs):
    data = run_json("tracker_run_show", runs[0][:6])
    assert data["id"] == runs[0] and data["status"] == "finished"
    assert data["params"] == {"lr": 0.1, "opt.name": "adam"}
    loss = {m["key"]: m for m in data["metrics"]}["loss"]
    assert (loss["count"], loss["step"], loss["last"]) == (20, 19, pytest.approx(1 / 20 + 0.1))
    text, _ = run("tracker_run_show", runs[0])
    assert "params" in text and "lr" in text and "metrics" in text and "trial-0" in text
    assert fails("tracker_run_show", "zzzzzzzz").returncode == EXIT_USAGE


def test_runs_compare(runs):
    data = run_json("tracker_runs_compare", runs[0], runs[1])
    assert data["runs"] == ["trial-0", "trial-1"]
    by_field = {r["field"]: r for r in data["rows"]}
    assert (by_field["params.lr"]["trial-0"], by_field["params.lr"]["trial-1"]) == (0.1, 0.01)
    assert by_field["metrics.acc"]["trial-1"] == pytest.approx(0.89)
    diff = run_json("tracker_runs_compare", runs[0], runs[1], diff=True)
    fields = {r["field"] for r in diff["rows"]}
    assert "params.lr" in fields and "params.opt.name" not in fields
    text, _ = run("tracker_runs_compare", runs[0], runs[1])
    assert text.splitlines()[0].split() == ["trial-0", "trial-1"]
    assert fails("tracker_runs_compare", runs[0], "nope-nope").returncode == EXIT_USAGE


# ------------------------------------------------------------------------------------ labels


@pytest.fixture
def labels(db):
    from tracker.models import Sample

    tracker.add_samples("rev", [{"id": "a", "text": "good"}, {"id": "b", "text": "bad"}, {"id": "c", "text": "meh"}])
    tracker.define_task("rev", "sentiment", "classification", ["pos", "neg"])
    s = {x.external_id: x for x in Sample.objects.filter(project__name="rev")}
    tracker.annotate(s["a"], "sentiment", "pos", "alice")
    tracker.annotate(s["a"], "sentiment", "pos", "bob")
    tracker.annotate(s["b"], "sentiment", "neg", "alice")
    return s


def test_export_labels_jsonl_and_csv(labels, tmp_path):
    data = run_json("tracker_export_labels", "rev", str(tmp_path / "l.jsonl"), task=["sentiment"])
    assert data["rows"] == 3
    rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert sorted((r["external_id"], r["annotator"], r["value"]) for r in rows) == [
        ("a", "alice", "pos"), ("a", "bob", "pos"), ("b", "alice", "neg")]
    data = run_json("tracker_export_labels", "rev", str(tmp_path / "final.csv"), task=["sentiment"],
                    strategy="majority", include_data=True)
    assert data["rows"] == 2
    frame = pd.read_csv(tmp_path / "final.csv")
    assert dict(zip(frame["external_id"], frame["label"] if "label" in frame else frame["value"])) == {"a": "pos", "b": "neg"}


def test_label_studio_export_then_import(labels, tmp_path):
    path = tmp_path / "ls.json"
    data = run_json("tracker_export_labels", "rev", str(path))
    assert data["format"] == "label-studio" and data["tasks"] == 3 and data["annotations"] == 3
    result = run_json("tracker_import_labels", "copy", str(path))
    assert result["samples"] == 3 and result["annotations"] == 3
    assert sorted(tracker.annotation_table("copy", "sentiment")["value"]) == ["neg", "pos", "pos"]


def test_labels_bad_input(labels, tmp_path):
    from tracker.models import Annotation

    assert fails("tracker_export_labels", "rev", str(tmp_path / "x.jsonl")).returncode == EXIT_USAGE  # no task
    assert fails("tracker_export_labels", "rev", str(tmp_path / "x.jsonl"), task=["nope"]).returncode == EXIT_USAGE
    assert fails("tracker_export_labels", "nope", str(tmp_path / "x.json")).returncode == EXIT_USAGE
    assert fails("tracker_export_labels", "rev", str(tmp_path / "x.xml"), task=["sentiment"]).returncode == EXIT_USAGE
    assert fails("tracker_import_labels", "rev", str(tmp_path / "missing.json")).returncode == EXIT_USAGE
    broken = tmp_path / "broken.json"
    broken.write_text('[{"data": {"text": "x"}, "annotations": [')
    before = Annotation.objects.count()
    assert fails("tracker_import_labels", "rev", str(broken)).returncode == EXIT_USAGE
    bad_label = tmp_path / "bad_label.json"
    bad_label.write_text(json.dumps([{"id": 1, "data": {"text": "x"}, "annotations": [{"result": [
        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["angry"]}}]}]}]))
    assert fails("tracker_import_labels", "rev", str(bad_label)).returncode == EXIT_USAGE
    assert fails("tracker_import_labels", "rev", str(broken), task=["nonsense"]).returncode == EXIT_USAGE
    assert Annotation.objects.count() == before


# ----------------------------------------------------------------------------------- helpers


def test_filter_parser():
    from tracker.management.base import CommandFailed, parse_key_values

    assert parse_key_values(["lr>=0.01", "opt=adam", "n!=3", "loss<1e-3", "flag=true", 'name="7"'], "param") == {
        "lr__gte": 0.01, "opt": "adam", "n__ne": 3, "loss__lt": 0.001, "flag": True, "name": "7"}
    with pytest.raises(CommandFailed):
        parse_key_values(["=3"], "param")


def test_every_command_documents_an_example():
    from tracker.cli import command_class, verbs

    table = verbs()
    assert {"init", "doctor", "serve", "createuser", "token", "backup", "restore", "gc", "import-samples",
            "export-dataset", "datasets", "runs", "run show", "runs compare", "export-labels",
            "import-labels"} <= set(table)
    for verb, name in table.items():
        cmd = command_class(name)()
        assert cmd.examples and all(e.startswith("tracker ") or "tracker " in e for e in cmd.examples), verb
        help_text = cmd.create_parser("manage.py", name).format_help()
        assert "examples:" in help_text and "exit codes:" in help_text and "--json" in help_text


def test_progress_bars_when_asked_and_never_in_json(transactional_db, tmp_path, capsys):
    from tracker.models import Run
    from tracker.services import artifacts

    run_model = Run.objects.create(project=_project("bars"), name="r")
    artifacts.log_artifact(run_model, b"x" * 100_000, "blob.bin")
    err = io.StringIO()
    call_command("tracker_backup", str(tmp_path / "a.tar"), progress=True, stdout=io.StringIO(), stderr=err)
    assert "backup files" in err.getvalue()
    err = io.StringIO()
    call_command("tracker_backup", str(tmp_path / "b.tar"), json=True, stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""
    path = tmp_path / "s.csv"
    path.write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(50)))
    capsys.readouterr()
    call_command("tracker_import_samples", "bars", str(path), progress=True, stdout=io.StringIO())
    assert "import s.csv" in capsys.readouterr().err
    call_command("tracker_import_samples", "bars", str(path), progress=False, stdout=io.StringIO())
    assert "import s.csv" not in capsys.readouterr().err


def _project(name):
    from tracker.models import Project

    return Project.objects.get_or_create(name=name)[0]


@pytest.mark.django_db
def test_serve_rejects_bad_ports_workers_and_servers():
    assert fails("tracker_serve", port=0).returncode == EXIT_USAGE
    assert fails("tracker_serve", port=70000).returncode == EXIT_USAGE
    assert fails("tracker_serve", workers=0).returncode == EXIT_USAGE
    err = fails("tracker_serve", "--server", "nginx")
    assert err.returncode == EXIT_USAGE and "invalid choice" in str(err)


def _installed(*names):
    return lambda module: module in names


def test_serve_prefers_granian_then_gunicorn_on_posix_then_uvicorn_with_httptools():
    from tracker_api.server import choose_server

    every = _installed("granian", "gunicorn", "uvicorn", "httptools")
    for posix in (True, False):  # granian runs on Windows too
        choice = choose_server(installed=every, posix=posix)
        assert (choice.name, choice.http) == ("granian", None)
        assert choice.why.startswith("granian, the default where it is installed")
    choice = choose_server(installed=_installed("gunicorn", "uvicorn", "httptools"), posix=True)
    assert (choice.name, choice.http) == ("gunicorn", None)
    assert choice.why.startswith("gunicorn, since granian is not installed")
    choice = choose_server(installed=_installed("uvicorn", "httptools"), posix=True)
    assert (choice.name, choice.http) == ("uvicorn", "httptools")
    assert choice.why == "uvicorn with httptools, since neither granian nor gunicorn is installed"
    choice = choose_server(installed=_installed("gunicorn", "uvicorn", "httptools"), posix=False)
    assert (choice.name, choice.http) == ("uvicorn", "httptools")
    assert choice.why == "uvicorn with httptools, since granian is not installed and gunicorn does not run on Windows"
    choice = choose_server(installed=_installed("uvicorn"), posix=True)
    assert (choice.name, choice.http) == ("uvicorn", None)
    assert "h11" in choice.why and "pip install httptools" in choice.why


def test_serve_keeps_an_explicit_server_choice():
    from tracker_api.server import choose_server

    every = _installed("granian", "gunicorn", "uvicorn", "httptools")
    choice = choose_server("uvicorn", installed=every, posix=True)
    assert (choice.name, choice.http, choice.why) == ("uvicorn", "httptools", "uvicorn with httptools, as --server asked")
    assert choose_server("gunicorn", installed=every, posix=True).why == "gunicorn, as --server asked"
    assert choose_server("granian", installed=every, posix=False).why == "granian, as --server asked"
    assert choose_server("uvicorn", installed=_installed("uvicorn"), posix=False).http is None


def test_serve_choice_errors_say_what_to_install():
    from tracker.exceptions import ConfigurationError
    from tracker_api.server import choose_server

    with pytest.raises(ConfigurationError, match=r"gunicorn is not installed: pip install 'tracker\[serve\]'"):
        choose_server("gunicorn", installed=_installed("uvicorn"), posix=True)
    with pytest.raises(ConfigurationError, match=r"granian is not installed: pip install 'tracker\[serve\]'"):
        choose_server("granian", installed=_installed("gunicorn"), posix=True)
    with pytest.raises(ConfigurationError, match="POSIX systems .* only; use --server granian or uvicorn"):
        choose_server("gunicorn", installed=_installed("gunicorn", "uvicorn"), posix=False)
    with pytest.raises(ConfigurationError, match=r"No server is installed .*pip install 'tracker\[serve\]'"):
        choose_server(installed=_installed("httptools"), posix=True)
    with pytest.raises(ConfigurationError, match="gunicorn does not run on Windows and neither granian nor uvicorn"):
        choose_server(installed=_installed("gunicorn"), posix=False)
    with pytest.raises(ConfigurationError, match="Unknown server 'nginx'"):
        choose_server("nginx")


def test_serve_choice_in_this_environment():
    """What is really installed here (the `serve` extra: granian, gunicorn, uvicorn, httptools)."""
    from tracker_api.server import choose_server

    assert choose_server().name == "granian"
    assert choose_server("uvicorn").http == "httptools"


# -------------------------------------------------------------------------- --quiet, backup


@pytest.mark.django_db
def test_quiet_prints_nothing_but_failures(tmp_path, settings):
    out, err = run("tracker_init", quiet=True)
    assert (out, err) == ("", "")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocker / "f")}}}
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("tracker_doctor", no_kernel=True, quiet=True, stdout=out, stderr=io.StringIO())
    assert info.value.returncode == EXIT_FAILED and "storage" in str(info.value)
    assert out.getvalue() == ""


@pytest.mark.django_db
def test_backup_bad_input(tmp_path):
    existing = tmp_path / "there.tar"
    existing.write_text("keep")
    err = fails("tracker_backup", str(existing))
    assert err.returncode == EXIT_USAGE and "--force" in str(err)
    assert existing.read_text() == "keep"
    err = fails("tracker_backup", str(tmp_path / "backup.zip"))
    assert err.returncode == EXIT_USAGE and ".tar" in str(err)
    assert fails("tracker_backup", str(tmp_path / "no-such-dir" / "b.tar")).returncode == EXIT_USAGE
    assert fails("tracker_backup", str(tmp_path / "b.tar"), method="rsync").returncode == EXIT_USAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there.tar"]


def test_backup_then_restore_through_call_command(transactional_db, tmp_path):
    from tracker.models import Project, Run
    from tracker.services import artifacts

    run_model = Run.objects.create(project=_project("kept"), name="r", params={"lr": 0.1})
    artifacts.log_artifact(run_model, b"payload" * 1000, "weights.bin")
    archive = tmp_path / "b.tar.gz"
    made = run_json("tracker_backup", str(archive))
    assert made["path"] == str(archive.resolve()) and made["files"] == 1
    Run.objects.all().delete()
    Project.objects.create(name="after the backup")
    err = fails("tracker_restore", str(archive))  # the database holds data now
    assert err.returncode == EXIT_FAILED and "--force" in str(err)
    restored = run_json("tracker_restore", str(archive), force=True)
    assert restored["counts"]["tracker_run"] == 1 and restored["files_present"] + restored["files_written"] == 1
    assert list(Run.objects.values_list("name", "params")) == [("r", {"lr": 0.1})]
    assert not Project.objects.filter(name="after the backup").exists()
    text, _ = run("tracker_restore", str(archive), force=True)
    assert text.startswith("Restored.") and "runs" in text
