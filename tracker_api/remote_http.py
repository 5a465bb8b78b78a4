"""Remote mode over HTTP: the client (one keep-alive connection per thread, bearer token),
server answers as tracker errors, and streamed uploads. Only the standard library's
``http.client`` is used."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tracker import exceptions as te

# -- errors -----------------------------------------------------------------------------------
class ServerUnavailable(te.DatabaseUnavailable):
    """The tracker server could not be reached (or answered 5xx); the call may be retried."""


class NotAvailableRemotely(te.ConfigurationError):
    """What was asked for needs this process's own database, and remote mode has none."""


def not_remote(what: str, instead: str) -> NotAvailableRemotely:
    return NotAvailableRemotely(
        f"{what} is not available in remote mode (tracker.configure(server_url=...)): the data "
        f"lives on the server, not in a database of this process. {instead}"
    )


def _error_for(status: int, body: bytes, what: str, not_found: type[te.NotFound] | None) -> te.TrackerError:
    try:
        data = json.loads(body)
        detail = data.get("detail") or str(data)
        code = data.get("code", "")
    except (ValueError, AttributeError):
        detail, code = body[:300].decode("utf-8", "replace") or f"HTTP {status}", ""
    message = f"{what}: {detail}"
    if status == 400 or status == 413:
        cls = {"import_rejected": te.ImportRejected, "invalid_annotation": te.InvalidAnnotation}.get(code, te.InvalidValue)
        return cls(message)
    if status == 401:
        return te.PermissionDenied(
            f"{what}: the server rejected the token ({detail}). Create one with `tracker token` on "
            f"the server and pass it to tracker.configure(token=...)."
        )
    if status == 403:
        return te.PermissionDenied(message)
    if status == 404:
        if not_found is not None:
            return not_found(message)
        if "project" in detail.lower():
            return te.ProjectNotFound(message)
        return te.RunNotFound(message) if what.startswith("run ") else te.NotFound(message)
    if status == 409:
        return te.ParamConflict(message) if code == "param_conflict" else te.Conflict(message)
    if code == "storage_error":
        return te.StorageError(message)
    return ServerUnavailable(f"{what}: the server answered {status} ({detail}); try again later.")


# -- HTTP -------------------------------------------------------------------------------------
class Client:
    """One keep-alive connection per thread to a tracker server, with bearer-token auth."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise te.ConfigurationError(
                f"server_url {url!r} is not an http(s) URL; use a form like https://tracker.example.org."
            )
        self.url = url.rstrip("/")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []  # every thread's, to close at exit

    def _new_conn(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new_conn()
            self._opened.append(conn)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._opened.remove(conn)

    def close_all(self) -> None:
        """Close every thread's connection (at exit, when no request is in flight)."""
        for conn in list(self._opened):
            conn.close()

    def _headers(self, headers: Mapping[str, str] | None) -> dict[str, str]:
        hdrs = {"Accept": "application/json", **(headers or {})}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        return hdrs

    def request(
        self, method: str, path: str, *, json_body: Any = None, body: Any = None,
        headers: Mapping[str, str] | None = None, what: str = "tracker server",
        not_found: type[te.NotFound] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON). Raises TrackerError."""
        hdrs = self._headers(headers)
        if json_body is not None:
            body = json.dumps(json_body, allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        # A kept-alive connection the server closed in between fails once: retry on a new one,
        # but only when the body can be sent again.
        attempts = 2 if body is None or isinstance(body, bytes) else 1
        for attempt in range(attempts):
            conn = self._conn()
            try:
                conn.request(method, self.prefix + path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt + 1 < attempts and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    continue
                raise ServerUnavailable(
                    f"{what}: cannot reach the tracker server at {self.url} ({type(exc).__name__}: {exc})."
                ) from None
        if resp.status >= 300:
            raise _error_for(resp.status, data, what, not_found)
        return resp.status, (json.loads(data) if data else None)

    def stream(self, path: str, *, what: str, not_found: type[te.NotFound] | None = None) -> tuple[Any, Any]:
        """GET ``path`` on a connection of its own (the caller may make other requests while it
        reads); returns (response, connection) to read and close."""
        conn = self._new_conn()
        try:
            conn.request("GET", self.prefix + path, headers=self._headers({"Accept": "*/*"}))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServerUnavailable(
                f"{what}: cannot reach the tracker server at {self.url} ({type(exc).__name__}: {exc})."
            ) from None
        if resp.status >= 300:
            data = resp.read()
            conn.close()
            raise _error_for(resp.status, data, what, not_found)
        return resp, conn


_client: Client | None = None


def client() -> Client:
    """The process's client for ``TRACKER["SERVER_URL"]`` with ``TRACKER["TOKEN"]``."""
    global _client
    from tracker import conf

    url, token = conf.get("SERVER_URL"), conf.get("TOKEN")
    if not url:
        raise te.ConfigurationError("No server_url is configured; call tracker.configure(server_url=..., token=...).")
    if _client is None or _client.url != url.rstrip("/") or _client.token != token:
        _client = Client(url, token)
    return _client


def enabled() -> bool:
    """True when this process logs runs to a server (``configure(server_url=...)``)."""
    from django.conf import settings

    return bool(settings.configured and (getattr(settings, "TRACKER", None) or {}).get("SERVER_URL"))


def query(params: Mapping[str, Any]) -> str:
    """``?a=1&b=x&b=y`` for the values that are not None (lists repeat the name)."""
    pairs = []
    for k, v in params.items():
        for item in v if isinstance(v, (list, tuple)) else [v]:
            if item is not None:
                pairs.append((k, str(item).lower() if isinstance(item, bool) else str(item)))
    return "?" + urlencode(pairs) if pairs else ""



def parse_time(value: Any) -> dt.datetime | None:
    from django.utils.dateparse import parse_datetime

    return parse_datetime(value) if isinstance(value, str) else value



class _Body:
    """An iterable request body; http.client streams it chunk by chunk (no read())."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it

    def __iter__(self) -> Iterator[bytes]:
        return self._it


def upload(run: Any, chunks: Iterator[bytes], size: int, sha256: str, name: str, kind: str,
           overwrite: bool, metadata: Mapping[str, Any], source: str) -> dict[str, Any]:
    """PUT one artifact's bytes, streamed with their size and sha256."""
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(size),
        "X-Content-SHA256": sha256,
        "X-Artifact-Source": source[:500],
        "X-Artifact-Kind": kind,
    }
    if metadata:
        headers["X-Artifact-Metadata"] = json.dumps(dict(metadata), allow_nan=False)
    path = f"/api/runs/{run.id}/artifacts/{quote(name, safe='/')}{'?overwrite=true' if overwrite else ''}"
    # http.client sends an iterable body chunk by chunk with the given Content-Length.
    return client().request("PUT", path, body=_Body(chunks), headers=headers, what=f"artifact {name!r}")[1]


def close_all() -> None:
    """Close the process client's connections (at exit)."""
    if _client is not None:
        _client.close_all()


def forget_client() -> None:
    """In a forked child: close this process's copies of the parent's sockets (the parent's
    stay open) and make new connections from here on."""
    global _client
    close_all()
    _client = None
