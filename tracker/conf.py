"""tracker's own settings: one table of defaults, read through :func:`get`.

Users set them as ``TRACKER = {"FLUSH_INTERVAL": 0.5}`` in a Django settings module, or as
keyword arguments to :func:`tracker.configure` (``configure(flush_interval=0.5)``).
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # Where the embedded SQLite file, artifacts and the secret key live. None: $TRACKER_HOME
    # or ~/.tracker.
    "HOME": None,
    # Metric buffering: a background flusher writes buffered points at least this often (s).
    "FLUSH_INTERVAL": 1.0,
    # A buffer holding this many points is flushed at once, without waiting for the interval.
    "FLUSH_MAX_POINTS": 50_000,
    # Commit every log_metric call before it returns (slower, nothing buffered).
    "DURABLE_METRICS": False,
    # Runs write a heartbeat this often (s); a running run whose heartbeat is older than
    # HEARTBEAT_TIMEOUT is reported as killed.
    "HEARTBEAT_INTERVAL": 10.0,
    "HEARTBEAT_TIMEOUT": 60.0,
    # Sample system metrics (CPU, memory, GPU) in the background for every run.
    "SYSTEM_METRICS": False,
    "SYSTEM_METRICS_INTERVAL": 10.0,
    # Storage prefix (inside Django's default storage) for content-addressed blobs.
    "BLOB_PREFIX": "blobs",
    # Annotation queue: a claim on a sample expires after this many seconds.
    "CLAIM_TTL": 600.0,
    # Show tqdm progress bars for long imports, exports and uploads.
    "PROGRESS": True,
    # Remote mode (issue 6): log runs to a tracker server over HTTP instead of a database.
    "SERVER_URL": None,
    "TOKEN": None,
    # REST API (issue 6): the largest JSON/form request body, and the largest streamed upload
    # (artifact content, import files); bigger requests are answered 413.
    "API_MAX_BODY_BYTES": 64 * 1024 * 1024,
    "API_MAX_UPLOAD_BYTES": 20 * 1024**3,
    # Page sizes of list endpoints (cursor pagination); clients may ask for up to the maximum.
    "API_PAGE_SIZE": 100,
    "API_MAX_PAGE_SIZE": 1000,
    # A token's last_used_at is written at most this often (s), not on every request.
    "API_TOKEN_TOUCH_INTERVAL": 60.0,
    # Metric points POSTed to the API, on PostgreSQL: False (the default) commits them with
    # synchronous_commit off, so the server answers before the commit's log record is flushed
    # to disk (a disk sync costs several ms, more than the rest of a request). A crash of the
    # database server or its machine - not of tracker - can then lose the points of the last
    # fraction of a second (up to 3 x wal_writer_delay, 0.6 s by default) although they were
    # acknowledged; nothing is half-written or corrupted, and other data (runs, params, tags,
    # annotations) is committed durably as always. True: every ingest waits for the flush. A
    # client can ask for that per request (POST .../metrics/?durable=true), which also makes
    # every point acknowledged before it durable. SQLite is unaffected: its WAL mode with
    # synchronous=NORMAL never syncs on commit.
    "API_METRICS_SYNCHRONOUS_COMMIT": False,
}


def get(name: str) -> Any:
    """Return the tracker setting ``name``: the user's value, else the default."""
    from django.conf import settings

    user = getattr(settings, "TRACKER", None) or {}
    if name in user:
        return user[name]
    try:
        return DEFAULTS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a tracker setting; known: {', '.join(DEFAULTS)}") from None
