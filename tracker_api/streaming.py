"""Streaming in both directions without holding a whole body in memory, under WSGI and ASGI."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse

from tracker import conf
from tracker_api.exceptions import PayloadTooLarge

CHUNK = 1024 * 1024


class _AsyncChunks:
    """An async iterator over a sync one, pulling each chunk on Django's thread-sensitive thread.

    Django's ASGI handler turns a *sync* streaming iterator into a list before sending, which
    would build a whole export in memory; this keeps it streaming.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        from asgiref.sync import sync_to_async

        pull = sync_to_async(_next_batch, thread_sensitive=True)
        while True:
            batch = await pull(self._it)
            if not batch:
                return
            yield batch


def _next_batch(it: Iterator[bytes], target: int = 256 * 1024) -> bytes:
    # Several small chunks per hop: one thread hop per ~256 KiB, not per row.
    parts: list[bytes] = []
    size = 0
    for part in it:
        if isinstance(part, str):
            part = part.encode()
        parts.append(part)
        size += len(part)
        if size >= target:
            break
    return b"".join(parts)


def is_asgi(request: Any) -> bool:
    from django.core.handlers.asgi import ASGIRequest

    return isinstance(getattr(request, "_request", request), ASGIRequest)


def stream(request: Any, chunks: Iterable[bytes], *, content_type: str, headers: dict[str, str] | None = None) -> StreamingHttpResponse:
    """A response that sends ``chunks`` as they are produced, under WSGI and ASGI alike."""
    body: Any = _AsyncChunks(chunks) if is_asgi(request) else _batched(chunks)
    response = StreamingHttpResponse(body, content_type=content_type)
    for k, v in (headers or {}).items():
        response[k] = v
    return response


def _batched(chunks: Iterable[bytes]) -> Iterator[bytes]:
    it = iter(chunks)
    while batch := _next_batch(it):
        yield batch


def file_chunks(fh: Any, size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of an open file in chunks; closes it at the end (or when the client leaves)."""
    try:
        while chunk := fh.read(size):
            yield chunk
    finally:
        fh.close()


def json_array(items: Iterable[Any]) -> Iterator[bytes]:
    """``[item, item, ...]`` written one element at a time."""
    yield b"["
    first = True
    for item in items:
        yield (b"" if first else b",") + json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        first = False
    yield b"]"


class SpooledUpload:
    """The request body copied to a temporary file, with its sha256 and size, never whole in memory.

    Use as a context manager; the file is removed on exit. Raises :class:`PayloadTooLarge`
    past ``TRACKER["API_MAX_UPLOAD_BYTES"]`` (a body without Content-Length is counted too).
    """

    def __init__(self, request: Any, suffix: str = "") -> None:
        self.request = request
        self.suffix = suffix
        self.path = ""
        self.size = 0
        self.sha256 = ""

    def __enter__(self) -> SpooledUpload:
        limit = int(conf.get("API_MAX_UPLOAD_BYTES"))
        fd, self.path = tempfile.mkstemp(prefix="tracker-upload-", suffix=self.suffix)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                source = self.request._request if hasattr(self.request, "_request") else self.request
                while chunk := source.read(CHUNK):
                    self.size += len(chunk)
                    if self.size > limit:
                        raise PayloadTooLarge(
                            f"The upload is larger than the server's limit of {limit} bytes "
                            f"(TRACKER['API_MAX_UPLOAD_BYTES'])."
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            self._remove()
            raise
        self.sha256 = digest.hexdigest()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class BodyLimit:
    """ASGI wrapper: answer 413 once a request body passes the largest configured limit."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = int(conf.get("API_MAX_UPLOAD_BYTES"))
        seen = 0
        too_big = False

        async def counted() -> dict:
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_big = True
                    raise _TooBig
            return message

        try:
            await self.app(scope, counted, send)
        except _TooBig:
            body = json.dumps(
                {"detail": f"The request body passed the server's limit of {limit} bytes.", "code": "payload_too_large"}
            ).encode()
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


class _TooBig(Exception):
    pass
