"""Remote logging: a notebook configured with server_url logs runs to a live server process."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from api_support import start_server, stop_server
from notebooks import run_cells


def _client_env(subprocess_env: dict[str, str], url: str, key: str) -> dict[str, str]:
    env = dict(subprocess_env)
    # The client has no database of its own to reach: a fresh home, no database URL.
    env.pop("TRACKER_DATABASE_URL", None)
    env["TRACKER_HOME"] = tempfile.mkdtemp(prefix="tracker-remote-client-")
    env["TRACKER_SERVER_URL"] = url
    env["TRACKER_TOKEN"] = key
    return env


def _client_results(subprocess_env: dict[str, str], key: str, script: str, out: Path, timeout: float) -> dict:
    """Run ``script`` (which writes JSON to its argument) as a remote client of a live server."""
    server = start_server(subprocess_env)
    try:
        env = _client_env(subprocess_env, server.url, key)
        done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True,
                              timeout=timeout)
    finally:
        stop_server(server)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def _editor_key(project: str = "remote") -> str:
    from tracker.models import Project
    from tracker.services import access

    user = access.create_user("trainer")
    access.set_role(Project.objects.create(name=project), user, "editor")
    return access.create_token(user, name="notebook")[1]


@pytest.mark.notebook
def test_notebook_logs_a_run_to_a_live_server(subprocess_env, tmp_path: Path):
    from tracker.models import Artifact, Metric, MetricSummary, Run

    key = _editor_key()
    server = start_server(subprocess_env)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    try:
        env = _client_env(subprocess_env, server.url, key)
        cells = run_cells(
            [
                "import tracker\ntracker.configure(flush_interval=0.2)",
                "run = tracker.start_run('remote', 'resnet', params={'opt': {'lr': 0.1}}, tags={'team': 'vision'})\n"
                "print(type(run).__name__, run.id)",
                "for step in range(20000):\n"
                "    run.log_metric('loss', 1.0 / (step + 1))\n"
                "run.log_metrics({'acc': 0.5, 'nan': float('nan'), 'inf': float('inf')}, step=3)\n"
                "run.log_param('batch', 32)\n"
                "run.set_tag('stage', 'warmup')",
                "try:\n    run.log_param('batch', 64)\nexcept tracker.TrackerError as e:\n    print(type(e).__name__)",
                f"info = run.log_artifact({str(weights)!r}, 'model/weights.bin')\nprint(info.sha256, info.size)",
                "run.finish()\nprint(run.status)",
                "with tracker.start_run('remote', 'crashes') as r2:\n"
                "    r2.log_metric('x', 1.0)\n"
                "    raise ValueError('diverged')",
                "await tracker.aio.start_run('remote', 'async-one')",
            ],
            env,
        )
    finally:
        stop_server(server)
    errors = [c.error for c in cells[:6] if c.error]
    assert not errors, errors
    assert cells[1].stdout.split()[0] == "RemoteRun"
    uid = cells[1].stdout.split()[1]
    assert cells[3].stdout.strip() == "ParamConflict"
    sha, size = cells[4].stdout.split()
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest() and int(size) == weights.stat().st_size
    assert cells[5].stdout.strip() == "finished"
    assert cells[6].error["ename"] == "ValueError"

    run = Run.objects.get(uid=uid)
    assert run.status == "finished" and run.ended_at is not None
    assert run.params == {"opt.lr": 0.1, "batch": 32}
    assert run.tags == {"team": "vision", "stage": "warmup"}
    assert run.host and run.python_version  # the client's environment, sent by the client
    assert Metric.objects.filter(run=run, key="loss").count() == 20000
    assert list(Metric.objects.filter(run=run, key="loss").order_by("step").values_list("step", flat=True)[:3]) == [0, 1, 2]
    nan = Metric.objects.get(run=run, key="nan").value
    assert nan is None or nan != nan  # NULL on SQLite, NaN on PostgreSQL
    assert Metric.objects.get(run=run, key="inf").value == float("inf")
    assert MetricSummary.objects.get(run=run, key="loss").count == 20000
    art = Artifact.objects.get(run=run, name="model/weights.bin")
    assert art.sha256 == sha and art.size == weights.stat().st_size
    crashed = Run.objects.get(name="crashes")
    assert crashed.status == "failed" and "diverged" in crashed.error
    assert Metric.objects.filter(run=crashed).count() == 1
    assert Run.objects.filter(name="async-one").exists()


CLIENT = textwrap.dedent(
    """
    import sys, time, warnings, tracker
    warnings.simplefilter("always")
    tracker.configure(flush_interval=0.2)
    run = tracker.start_run("remote", "outage")
    print(run.id, flush=True)
    for step in range(3000):
        run.log_metric("loss", float(step))
        if step % 1000 == 999:
            time.sleep(1.0)
            print("logged", step + 1, flush=True)
            sys.stdin.readline()   # the test restarts the server here
    run.finish()
    print("finished", run.status, flush=True)
    """
)


def test_points_logged_while_the_server_is_down_are_sent_after_it_returns(subprocess_env):
    from tracker.models import Metric, Run

    key = _editor_key()
    server = start_server(subprocess_env)
    port = int(server.url.rsplit(":", 1)[1])
    env = _client_env(subprocess_env, server.url, key)
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        uid = client.stdout.readline().strip()
        line = client.stdout.readline().strip()
        if line != "logged 1000":
            client.kill()
            raise AssertionError(f"client: {uid!r} {line!r} {client.stderr.read()[-3000:]}")
        stop_server(server)  # the server goes away mid-run
        client.stdin.write("\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "logged 2000"  # training went on
        server = start_server(subprocess_env, port=port)  # and comes back
        client.stdin.write("\n\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
        stop_server(server)
    assert "finished finished" in out, (out, err)
    assert "cannot reach the tracker server" in err  # the user was told, once
    run = Run.objects.get(uid=uid)
    assert run.status == "finished"
    steps = list(Metric.objects.filter(run=run, key="loss").order_by("step").values_list("step", flat=True))
    assert steps == list(range(3000)), f"{len(steps)} points; missing {sorted(set(range(3000)) - set(steps))[:10]}"


def test_remote_errors_are_tracker_errors(subprocess_env):
    key = _editor_key()
    server = start_server(subprocess_env)
    script = textwrap.dedent(
        f"""
        import tracker
        tracker.configure()
        for project in ["remote", "not-mine-" + "x" * 3]:
            try:
                run = tracker.start_run(project, "r")
                print("ok", project)
            except tracker.TrackerError as e:
                print(type(e).__name__, str(e)[:80])
        """
    )
    try:
        env = _client_env(subprocess_env, server.url, key)
        from tracker.models import Project

        Project.objects.create(name="not-mine-xxx")
        ok = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
        env["TRACKER_TOKEN"] = "trk_wrong"
        bad = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    finally:
        stop_server(server)
    lines = ok.stdout.splitlines()
    assert lines[0] == "ok remote", ok.stderr
    assert lines[1].startswith("ProjectNotFound") or lines[1].startswith("NotFound"), lines
    assert bad.stdout.splitlines()[0].startswith("PermissionDenied"), bad.stdout + bad.stderr
    assert "rejected the token" in bad.stdout


# -- a faithful stand-in: what the remote handle reads back is what the local API returns ----------
STAND_IN = textwrap.dedent(
    """
    import hashlib, json, pickle, sys, warnings
    from pathlib import Path
    import pandas as pd
    import tracker

    out = Path(sys.argv[1])
    tracker.configure(flush_interval=0.2)
    res = {}
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    with tracker.start_run("remote", "stand-in", params={"opt": {"lr": 0.1}}, tags={"t": 1}) as run:
        for step in range(50):
            run.log_metric("loss", 1.0 / (step + 1))
        run.log_metrics({"acc": 0.5, "odd": float("nan")}, step=3)
        run.log_metric("odd", float("inf"), step=4)
        run.log_metric("loss", 9.0, step=10)  # a step logged twice: wide keeps the last value
        try:
            run.log_metrics({"acc": 0.7, "bad": "x"})
        except tracker.TrackerError as e:
            res["bad_metrics"] = type(e).__name__
        run.set_notes("first")
        res["notes"] = run.set_notes("second", append=True)
        one = run.log_artifact(str(out / "weights.bin"), "model/weights.bin")
        run.log_artifact(b"raw bytes", "raw.bin")
        df_art = run.log_artifact(frame, "table")
        listed = run.log_artifact(str(out / "dir"), "dir")
        res["types"] = [type(one).__name__, type(listed).__name__, len(listed), df_art.name, df_art.kind]
        try:
            run.log_artifact(b"other bytes", "raw.bin")
        except tracker.TrackerError as e:
            res["conflict"] = type(e).__name__
        version = tracker.get_dataset("ds")  # the server's version, in remote mode
        run.use_dataset(version, "train")
        run.use_dataset(version.id, "eval")
        res["inputs"] = [[v.name, v.version, ctx, len(v.to_pandas())] for v, ctx in run.inputs()]
        pickle.dump(version.to_pandas(), open(out / "version.pkl", "wb"))
        res["plot"] = run.plot("loss").axes[0].lines[0].get_xydata().tolist()
        res["artifacts"] = [[a.name, a.kind, a.size, a.sha256] for a in run.artifacts()]
        res["load"] = bool(run.artifact("table.parquet").load().equals(frame))
        res["bytes"] = run.artifact("raw.bin").read_bytes().decode()
        (out / "dl").mkdir()
        res["download"] = str(run.artifact("model/weights.bin").download(out / "dl"))
        with run.artifact("model/weights.bin").open() as fh:
            res["open_sha"] = hashlib.sha256(fh.read()).hexdigest()
        for what, call in [("model", lambda: run.model), ("missing", lambda: run.artifact("nope")),
                           ("unknown", lambda: tracker.get_run("ffffffffffffffff")),
                           ("bad_context", lambda: run.use_dataset(version, ""))]:
            try:
                call()
            except tracker.TrackerError as e:
                res[what] = [type(e).__name__, str(e)]
    uid = run.id
    res["uid"] = uid
    res["status"] = tracker.get_run(uid[:6]).status
    # resume: steps continue, params may be added but not changed, the end is sent again
    again = tracker.start_run(resume=uid, params={"extra": 1}, notes="resumed")
    res["resumed_status"] = again.status
    again.log_metric("loss", 0.01)
    try:
        again.log_param("opt.lr", 0.2)
    except tracker.TrackerError as e:
        res["param_conflict"] = type(e).__name__
    again.finish()
    with tracker.start_run("remote", "other", params={"opt": {"lr": 0.2}}) as other:
        other.log_metric("loss", 2.0)
    res["count"] = len(tracker.runs(project="remote"))
    res["listed"] = [r.id for r in tracker.runs(project="remote", params={"opt.lr__gt": 0.15})]
    res["first"] = tracker.runs(project="remote").order_by("started_at").first().id
    res["sliced"] = [r.id for r in tracker.runs(project="remote")[:1]]
    tracker.flush()
    pickle.dump({
        "wide": run.history(),
        "long": run.history(["loss", "odd"], wide=False),
        "frame": tracker.runs_frame(project="remote"),
        "many": tracker.runs(project="remote").history(),
        "many_long": tracker.runs(project="remote", name="stand*").history("loss", wide=False),
        "compare": tracker.compare([uid, other.id]),
        "compare_diff": tracker.runs(project="remote").compare(only_differences=True),
    }, open(out / "frames.pkl", "wb"))
    res["plot_metrics"] = len(tracker.plot_metrics([uid, other], "loss").axes[0].lines)
    json.dump(res, open(out / "res.json", "w"))
    """
)


def _dataset(project_name: str = "remote") -> None:
    from tracker.models import Project, Sample
    from tracker.services.datasets import create_dataset
    from tracker.services.samples import add_samples

    project = Project.objects.get(name=project_name)
    add_samples(project, [{"id": f"s{i}", "text": f"t{i}", "n": i} for i in range(12)])
    create_dataset("ds", Sample.objects.filter(project=project), project=project, progress=False)


def test_remote_run_reads_back_what_the_local_api_returns(subprocess_env, tmp_path: Path):
    import pandas as pd

    import tracker

    key = _editor_key()
    _dataset()
    (tmp_path / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a.txt").write_text("a")
    (tmp_path / "dir" / "sub" / "b.txt").write_text("b")
    server = start_server(subprocess_env)
    try:
        env = _client_env(subprocess_env, server.url, key)
        done = subprocess.run([sys.executable, "-c", STAND_IN, str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        stop_server(server)
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads((tmp_path / "res.json").read_text())
    got = pd.read_pickle(tmp_path / "frames.pkl")
    uid = res["uid"]
    local = tracker.get_run(uid)

    # frames: exactly the local ones (same dtypes, index, NaN and infinities)
    pd.testing.assert_frame_equal(got["wide"], local.history())
    pd.testing.assert_frame_equal(got["long"], local.history(["loss", "odd"], wide=False))
    assert got["wide"].loc[10, "loss"] == 9.0 and got["wide"].loc[4, "odd"] == float("inf")
    assert got["wide"].loc[50, "loss"] == 0.01  # the resumed run went on at the next step
    pd.testing.assert_frame_equal(got["frame"], tracker.runs_frame(project="remote"))
    pd.testing.assert_frame_equal(got["many"], tracker.runs(project="remote").history())
    pd.testing.assert_frame_equal(got["many_long"], tracker.runs(project="remote", name="stand*").history("loss", wide=False))
    other = [i for i in got["frame"].index if i != uid][0]
    pd.testing.assert_frame_equal(got["compare"], tracker.compare([uid, other]))
    pd.testing.assert_frame_equal(got["compare_diff"], tracker.runs(project="remote").compare(only_differences=True))
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "version.pkl"), tracker.get_dataset("ds").to_pandas())

    # the handle's other reads
    assert res["bad_metrics"] == "InvalidValue"
    assert res["notes"] == "first\n\nsecond" and local.notes == "first\n\nsecond\n\nresumed"
    assert res["types"] == ["RemoteArtifactFile", "list", 2, "table.parquet", "dataframe"]
    assert res["conflict"] == "Conflict"
    assert res["inputs"] == [["ds", 1, "train", 12], ["ds", 1, "eval", 12]]
    assert [(v.name, ctx) for v, ctx in local.inputs()] == [("ds", "train"), ("ds", "eval")]
    assert res["artifacts"] == [[a.name, a.kind, a.size, a.sha256] for a in local.artifacts()]
    assert {a[0]: a[1] for a in res["artifacts"]} == {
        "dir/a.txt": "directory-file", "dir/sub/b.txt": "directory-file", "model/weights.bin": "file",
        "raw.bin": "bytes", "table.parquet": "dataframe",
    }
    assert res["load"] is True and res["bytes"] == "raw bytes"
    weights = (tmp_path / "weights.bin").read_bytes()
    assert Path(res["download"]).read_bytes() == weights
    assert res["open_sha"] == hashlib.sha256(weights).hexdigest()
    xy = tracker.get_run(uid).plot("loss").axes[0].lines[0].get_xydata().tolist()
    assert res["plot"] + [[50.0, 0.01]] == xy  # drawn before the resumed run's last point
    assert res["plot_metrics"] == 2
    assert res["model"][0] == "NotAvailableRemotely" and "run.id" in res["model"][1]
    assert res["missing"][0] == "ArtifactNotFound" and "model/weights.bin" in res["missing"][1]
    assert res["unknown"][0] == "RunNotFound"
    assert res["bad_context"][0] == "InvalidValue"
    assert res["status"] == "finished"
    assert res["resumed_status"] == "running" and res["param_conflict"] == "ParamConflict"
    assert local.status == "finished" and local.params == {"opt.lr": 0.1, "extra": 1}
    assert res["count"] == 2 and res["listed"] == [other] and res["first"] == uid
    assert res["sliced"] == [other]  # most recent first


ASYNC_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    import tracker

    async def main():
        res = {}
        async with await tracker.aio.start_run("remote", "async", params={"a": 1}) as run:
            res["type"] = type(run).__name__
            await run.log_metric("x", 1.0)
            await run.log_metrics({"x": 2.0, "y": 3.0})
            res["notes"] = await run.set_notes("n")
            art = await run.log_artifact(b"abc", "a.bin")
            res["art"] = [type(art).__name__, (await art.read_bytes()).decode()]
            res["listed"] = [a.name for a in await run.artifacts()]
            hist = await run.history()
            res["hist"] = hist.reset_index().to_dict("list")
            res["tags"] = await run.set_tags({"k": "v"})
        got = await tracker.aio.get_run(run.id)
        res["status"] = [type(got).__name__, got.status, got.name]
        res["ids"] = [r.id async for r in await tracker.aio.runs(project="remote")]
        res["count"] = await (await tracker.aio.runs(project="remote")).count()
        frame = await tracker.aio.runs_frame(project="remote")
        res["frame"] = [list(frame.index), frame.loc[run.id, "metrics.y"]]
        res["flushed"] = await tracker.aio.flush()
        version = await tracker.aio.get_dataset("ds")  # the server's, in remote mode
        res["dataset"] = [type(version).__name__, version.version, len(await version.to_pandas())]
        json.dump(res, open(sys.argv[1], "w"))

    tracker.configure(flush_interval=0.2)
    asyncio.run(main())
    """
)


def test_async_remote_run_has_the_async_api(subprocess_env, tmp_path: Path):
    from tracker.models import Metric, Run

    key = _editor_key()
    _dataset()
    res = _client_results(subprocess_env, key, ASYNC_CLIENT, tmp_path / "res.json", timeout=180)
    run = Run.objects.get(name="async")
    assert res["type"] == "AsyncRemoteRun" and res["notes"] == "n"
    assert res["art"] == ["AsyncRemoteArtifactFile", "abc"] and res["listed"] == ["a.bin"]
    hist = res["hist"]  # log_metrics without a step: the next step of the most advanced key
    assert hist["step"] == [0, 1] and hist["x"] == [1.0, 2.0] and hist["y"][1] == 3.0 and hist["y"][0] != hist["y"][0]
    assert res["tags"] == {"k": "v"}
    assert res["status"] == ["AsyncRemoteRun", "finished", "async"]
    assert res["ids"] == [run.uid] and res["count"] == 1
    assert res["frame"] == [[run.uid], 3.0]
    assert res["dataset"] == ["AsyncRemoteDatasetVersion", 1, 12]
    assert run.status == "finished" and Metric.objects.filter(run=run).count() == 3


# -- method by method: the remote handles have the local handles' API --------------------------
def _members(cls) -> dict[str, inspect.Signature | None]:
    out = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        out[name] = inspect.signature(member) if callable(member) else None
    return out


def _pairs():
    from tracker._async.datasets import AsyncDatasetVersion
    from tracker._async.runs import AsyncArtifactFile, AsyncRun, AsyncRuns
    from tracker._sync.datasets import DatasetVersion
    from tracker._sync.runs import ArtifactFile, Run, Runs
    from tracker_api import remote, remote_reads as rr

    return [
        (Run, remote.RemoteRun), (ArtifactFile, rr.RemoteArtifactFile), (Runs, rr.RemoteRuns),
        (DatasetVersion, rr.RemoteDatasetVersion), (AsyncArtifactFile, rr.AsyncRemoteArtifactFile),
        (AsyncRuns, rr.AsyncRemoteRuns), (AsyncDatasetVersion, rr.AsyncRemoteDatasetVersion),
    ]


def test_remote_handles_have_every_method_and_attribute_of_the_local_ones():
    for local, remote_cls in _pairs():
        mine, theirs = _members(local), _members(remote_cls)
        assert set(mine) <= set(theirs), (remote_cls.__name__, set(mine) - set(theirs))
        for name, sig in mine.items():
            if sig is not None:
                assert theirs[name] is not None, f"{remote_cls.__name__}.{name}"
                assert list(sig.parameters) == list(theirs[name].parameters), f"{remote_cls.__name__}.{name}"
                local_async = inspect.iscoroutinefunction(getattr(local, name))
                assert local_async == inspect.iscoroutinefunction(getattr(remote_cls, name)), f"{remote_cls.__name__}.{name}"


def test_async_remote_run_mirrors_async_run():
    from tracker._async.runs import AsyncRun
    from tracker_api.remote import AsyncRemoteRun, NotAvailableRemotely, RemoteRun

    run = AsyncRemoteRun(RemoteRun({"id": "0123456789abcdef", "name": "n", "project": "p", "status": "running",
                                    "started_at": "2024-01-01T00:00:00Z", "parent": None}))
    for name, sig in _members(AsyncRun).items():
        if sig is None:  # attributes come from the wrapped run, without I/O
            if name in ("model", "pk"):
                with pytest.raises(NotAvailableRemotely, match="remote mode"):
                    getattr(run, name)
            else:
                getattr(run, name)
            continue
        theirs = getattr(AsyncRemoteRun, name)
        assert list(sig.parameters) == list(inspect.signature(theirs).parameters), name
        assert inspect.iscoroutinefunction(theirs), f"AsyncRemoteRun.{name} must be awaitable"
    assert run.started_at.year == 2024 and run.parent_id is None


def test_remote_start_run_takes_the_local_arguments():
    import tracker
    from tracker_api import remote, remote_reads

    local = list(inspect.signature(tracker.start_run).parameters)
    assert list(inspect.signature(remote.start_run).parameters)[: len(local)] == local
    for name in ("compare", "plot_metrics", "runs_frame", "get_run"):
        fn = getattr(remote_reads, name)
        params = inspect.signature(fn).parameters
        wanted = [p for p in inspect.signature(getattr(tracker, name)).parameters]
        if name != "runs_frame":  # runs_frame takes the filters as **filters
            assert list(params) == wanted, name


@pytest.mark.notebook
def test_notebook_rerun_durable_and_system_metrics_work_remotely(subprocess_env):
    from tracker.models import Metric, Run

    key = _editor_key()
    server = start_server(subprocess_env)
    rerun = "r = tracker.start_run('remote', 'rerun')\nr.log_metric('x', 1.0)\nprint(r.id)"
    try:
        env = _client_env(subprocess_env, server.url, key)
        cells = run_cells(
            [
                "import tracker\nfrom tracker_api import remote\n"
                "tracker.configure(flush_interval=30, system_metrics_interval=0.2)",
                rerun,
                rerun,  # executing the cell again finishes the run its first execution left open
                "d = tracker.start_run('remote', 'durable', durable=True)\nd.log_metric('x', 1.0)\n"
                "_, h = remote.client().request('GET', f'/api/runs/{d.id}/metrics/')\nprint(h['keys']['x']['value'])",
                "import time\ns = tracker.start_run('remote', 'sys', system_metrics=True)\ntime.sleep(1.5)\ns.finish()\n"
                "print(sorted(k for k in s.history().columns if k.startswith('system/'))[:2])",
                "print(r.status, tracker.get_run(r.id).status)",
            ],
            env,
        )
    finally:
        stop_server(server)
    errors = [c.error for c in cells if c.error]
    assert not errors, errors
    first, second = cells[1].stdout.strip(), cells[2].stdout.strip()
    assert first != second
    assert "was still running from an earlier execution of this cell" in cells[2].stderr
    assert Run.objects.get(uid=first).status == "finished"
    assert Metric.objects.filter(run__uid=first).count() == 1  # its point was sent with its end
    assert cells[3].stdout.strip() == "[1.0]"  # on the server before log_metric returned
    assert cells[4].stdout.strip() == "['system/cpu_percent', 'system/memory_percent']"
    sys_run = Run.objects.get(name="sys")
    assert Metric.objects.filter(run=sys_run, key="system/cpu_percent").count() >= 3
    assert cells[5].stdout.strip() == "running running"


DAMAGED = textwrap.dedent(
    """
    import sys, warnings
    from pathlib import Path
    import tracker
    warnings.simplefilter("always")
    tracker.configure(flush_interval=0.2)
    out = Path(sys.argv[1])
    run = tracker.get_run(sys.argv[2])
    for what, call in [("read", lambda: run.artifact("w.bin").read_bytes()),
                       ("download", lambda: run.artifact("w.bin").download(out)),
                       ("foreign", lambda: tracker.get_run(sys.argv[3]))]:
        try:
            call()
            print(what, "no error")
        except tracker.TrackerError as e:
            print(what, type(e).__name__, str(e)[:200])
    print("left", sorted(p.name for p in out.iterdir()))
    parent = tracker.start_run("remote", "forked")
    parent.log_metric("x", 1.0)
    import os
    pid = os.fork()
    if pid == 0:  # a worker process logs into its parent's run; the end stays the parent's
        parent.log_metric("from_child", 1.0)
        parent.finish("failed")
        os._exit(0)
    os.waitpid(pid, 0)
    parent.log_metric("x", 2.0)
    print("forked", parent.refresh().status, len(parent.history()), flush=True)
    parent.finish()
    doomed = tracker.start_run("remote", "doomed")
    doomed.log_metric("x", 1.0)
    doomed.flush()
    print(doomed.id, flush=True)
    sys.stdin.readline()  # the run is deleted on the server here
    doomed.log_metric("x", 2.0)
    doomed.finish()
    print("finished", doomed.status, flush=True)
    """
)


def test_damaged_downloads_and_a_deleted_run_are_reported_not_hidden(subprocess_env, tmp_path: Path):
    from django.core.files.storage import default_storage

    from tracker.models import Artifact, Project, Run
    from tracker.services.artifacts import log_artifact

    key = _editor_key()
    run = Run.objects.create(project=Project.objects.get(name="remote"), name="stored", status="finished")
    log_artifact(run, b"x" * 1000, "w.bin")
    blob = Artifact.objects.get(run=run).blob
    with default_storage.open(blob.storage_name, "wb") as fh:
        fh.write(b"y" * 1000)  # the bytes rot in the storage; the database still has their sha256
    foreign = Run.objects.create(project=Project.objects.create(name="elsewhere"), name="theirs")
    out = tmp_path / "downloads"
    out.mkdir()
    server = start_server(subprocess_env)
    try:
        env = _client_env(subprocess_env, server.url, key)
        client = subprocess.Popen([sys.executable, "-c", DAMAGED, str(out), run.uid, foreign.uid], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = [client.stdout.readline().strip() for _ in range(6)]
        if client.poll() is not None or len(lines[-1]) != 16:
            raise AssertionError((lines, client.stderr.read()[-3000:]))
        Run.objects.filter(uid=lines[-1]).delete()
        out_rest, err = client.communicate("\n", timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
        stop_server(server)
    assert lines[0].startswith("read StorageError") and "arrived damaged" in lines[0], lines
    assert lines[1].startswith("download StorageError"), lines
    assert lines[2].startswith("foreign RunNotFound"), lines
    assert lines[3] == "left []", lines  # no half or bad file was left behind
    assert lines[4] == "forked running 2", lines
    forked = Run.objects.get(name="forked")
    assert forked.status == "finished" and forked.metric_points.filter(key="from_child").count() == 1
    assert "finished finished" in out_rest, (out_rest, err)
    assert "ResourceWarning" not in err, err
    assert "refused" in err and "doomed" not in [r.name for r in Run.objects.all()]


def test_a_durable_remote_run_asks_the_server_to_commit_durably(monkeypatch):
    """The server's metric ingest commits with synchronous_commit off unless asked; a durable
    run asks on every send, an ordinary one never does."""
    from tracker_api import remote

    sent: list[str] = []

    class Recorder:
        def request(self, method, url, json_body=None, what=""):
            sent.append(url)
            return 200, {}

    monkeypatch.setattr(remote, "client", lambda: Recorder())
    durable = remote.RemoteRun({"id": "d" * 16}, durable=True)
    durable.log_metric("loss", 1.0, step=0)
    plain = remote.RemoteRun({"id": "p" * 16})
    plain._buf.log_metric("loss", 1.0, step=0)
    plain.flush()
    assert sent == [f"/api/runs/{'d' * 16}/metrics/?durable=true", f"/api/runs/{'p' * 16}/metrics/"]


DIFF_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys
    import tracker

    tracker.configure()
    v1, v2 = tracker.get_dataset("ds", version=1), tracker.get_dataset("ds", version=2)
    d = v1.diff(v2)
    res = {"sync": [d.old, d.new, d.added, d.removed, d.changed, d.moved, d.unchanged, bool(v1.diff(v1))]}
    res["runs"] = [[type(u.run).__name__, u.run.name, u.run.status, u.context, u.version.version, u.created_at.isoformat()]
                   for u in v1.runs()]

    async def main():
        a1 = await tracker.aio.get_dataset("ds", version=1)
        a2 = await tracker.aio.get_dataset("ds", version=2)
        d = await a1.diff(a2)
        res["async"] = [d.old, d.new, d.added, d.removed, d.changed, d.moved, d.unchanged]
        res["async_runs"] = [[type(u.run).__name__, u.run.name, u.context] for u in await a1.runs()]
        try:
            await a1.diff("v2")
        except tracker.TrackerError as e:
            res["bad"] = [type(e).__name__, str(e)[:80]]

    asyncio.run(main())
    json.dump(res, open(sys.argv[1], "w"))
    """
)


def test_dataset_diff_works_remotely_and_is_the_local_diff(subprocess_env, tmp_path: Path):
    import tracker
    from tracker.models import Project, Sample
    from tracker.services.datasets import create_dataset
    from tracker.services.samples import add_samples

    key = _editor_key()
    project = Project.objects.get(name="remote")
    add_samples(project, [{"id": f"s{i}", "text": f"t{i}"} for i in range(6)])
    create_dataset("ds", Sample.objects.filter(project=project), project=project, splits={"a": 0.5, "b": 0.5}, progress=False)
    add_samples(project, [{"id": "s3", "text": "edited"}, {"id": "s9", "text": "new"}])
    create_dataset("ds", Sample.objects.filter(project=project).exclude(external_id="s0"), project=project,
                   splits={"a": 0.5, "b": 0.5}, progress=False)
    from tracker.models import DatasetVersion, Run
    from tracker.services.datasets import use_dataset

    v1 = DatasetVersion.objects.get(dataset__name="ds", version=1)
    trainer = Run.objects.create(project=project, name="trainer", status="finished")
    use_dataset(trainer, v1.pk, "train")
    use_dataset(trainer, v1.pk, "eval")
    hidden = Run.objects.create(project=Project.objects.create(name="elsewhere"), name="hidden")
    use_dataset(hidden, v1.pk, "train")  # a run of a project the client is not in: not listed
    res = _client_results(subprocess_env, key, DIFF_CLIENT, tmp_path / "res.json", timeout=120)
    local = tracker.get_dataset("ds", version=1).diff(tracker.get_dataset("ds", version=2))
    want = [local.old, local.new, local.added, local.removed, local.changed, local.moved, local.unchanged]
    assert res["sync"] == [*want, False] and res["async"] == want
    local_runs = tracker.get_dataset("ds", version=1).runs()
    assert [[u.run.name, u.context] for u in local_runs] == [["trainer", "train"], ["trainer", "eval"], ["hidden", "train"]]
    assert res["runs"] == [["RemoteRun", "trainer", "finished", u.context, 1, u.created_at.isoformat()] for u in local_runs[:2]]
    assert res["async_runs"] == [["AsyncRemoteRun", "trainer", "train"], ["AsyncRemoteRun", "trainer", "eval"]]
    assert (local.added, local.removed, local.changed) == (["s9"], ["s0"], ["s3"])
    assert res["bad"][0] == "InvalidValue" and "two dataset versions" in res["bad"][1]
