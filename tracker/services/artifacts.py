"""Artifacts: files of a run stored once per content (sha256) through Django's storage API.

Bytes go to a temporary name first and are moved to their content address only when complete;
the ``Blob`` and ``Artifact`` rows are written after that, in one transaction. A crash at any
point therefore leaves at most an unreferenced temporary file, never a partial artifact.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import transaction
from django.utils import timezone

from tracker import conf
from tracker.exceptions import ArtifactNotFound, Conflict, InvalidValue, StorageError
from tracker.models import Artifact, Blob, Run

CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 32 << 20  # uploads at least this large show a progress bar
MAX_NAME = 500


@dataclass(frozen=True)
class ArtifactInfo:
    """A stored artifact: what it is and where its bytes live (no open file, no connection)."""

    run_id: str
    name: str
    kind: str
    size: int
    sha256: str
    storage_name: str
    created_at: Any
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(cls, a: Artifact, run_uid: str) -> ArtifactInfo:
        return cls(
            run_id=run_uid,
            name=a.name,
            kind=a.kind,
            size=a.size,
            sha256=a.sha256,
            storage_name=a.blob.storage_name,
            created_at=a.created_at,
            metadata=dict(a.metadata or {}),
        )


# -- names -----------------------------------------------------------------------------------
def check_artifact_name(name: object) -> str:
    """A relative POSIX path without ``..``, empty parts or control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(
            f"An artifact name must be a non-empty string such as 'model.pt' or 'plots/loss.png', "
            f"not {name!r:.60}."
        )
    if len(name) > MAX_NAME:
        raise InvalidValue(f"An artifact name has at most {MAX_NAME} characters; got {len(name)}.")
    if "\\" in name:
        raise InvalidValue(f"Artifact name {name!r} contains a backslash; use '/' between folders.")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidValue(
            f"Artifact name {name!r} is an absolute path; give a name relative to the run, such "
            f"as {name.lstrip('/').split(':')[-1].lstrip('/') or 'model.pt'!r}."
        )
    parts = name.split("/")
    if any(p == ".." for p in parts):
        raise InvalidValue(
            f"Artifact name {name!r} contains '..'; names cannot leave the run's folder."
        )
    if any(p in ("", ".") for p in parts):
        raise InvalidValue(
            f"Artifact name {name!r} has an empty or '.' part; write it as 'a/b.txt'."
        )
    if any(ord(c) < 32 for c in name):
        raise InvalidValue(f"Artifact name {name!r} contains control characters.")
    return name


# -- sources ---------------------------------------------------------------------------------
@dataclass
class _Source:
    name: str
    kind: str
    opener: Callable[[], IO[bytes]]
    size: int | None
    seekable: bool
    metadata: dict[str, Any]


def _with_suffix(name: str, suffix: str) -> str:
    return name if PurePosixPath(name).suffix else name + suffix


def _needs_name(kind: str, example: str) -> InvalidValue:
    return InvalidValue(f"Logging {kind} needs a name: run.log_artifact(obj, name={example!r}).")


def _sources(obj: Any, name: str | None) -> list[_Source]:
    if name is not None:
        name = check_artifact_name(name)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj).expanduser()
        if path.is_file():
            return [_file_source(path, name or path.name, Artifact.Kind.FILE)]
        if path.is_dir():
            base = name or path.resolve().name
            files = sorted(p for p in path.rglob("*") if p.is_file())
            if not files:
                raise InvalidValue(f"Directory {str(path)!r} holds no files; nothing to log.")
            return [
                _file_source(
                    p, f"{base}/{p.relative_to(path).as_posix()}", Artifact.Kind.DIRECTORY_FILE
                )
                for p in files
            ]
        raise InvalidValue(
            f"{str(obj)!r} is not an existing file or directory. To store text, pass "
            f"text.encode() with a name."
        )
    if isinstance(obj, (bytes, bytearray, memoryview)):
        if name is None:
            raise _needs_name("bytes", "weights.bin")
        data = bytes(obj)
        return [_Source(name, Artifact.Kind.BYTES, lambda: io.BytesIO(data), len(data), True, {})]
    pd = _module("pandas")
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        if name is None:
            raise _needs_name("a DataFrame", "predictions.parquet")
        frame = obj.to_frame() if isinstance(obj, pd.Series) else obj
        buf = io.BytesIO()
        try:
            frame.to_parquet(buf, index=True)
        except Exception as exc:
            raise InvalidValue(
                f"The DataFrame cannot be written as Parquet ({type(exc).__name__}: {exc}); "
                f"convert object columns to strings or numbers first."
            ) from None
        data = buf.getvalue()
        meta = {
            "format": "parquet",
            "rows": int(len(frame)),
            "columns": [str(c) for c in frame.columns],
        }
        return [
            _Source(
                _with_suffix(name, ".parquet"),
                Artifact.Kind.DATAFRAME,
                lambda: io.BytesIO(data),
                len(data),
                True,
                meta,
            )
        ]
    figure = _figure_of(obj)
    if figure is not None:
        if name is None:
            raise _needs_name("a matplotlib figure", "loss.png")
        buf = io.BytesIO()
        figure.savefig(buf, format="png", bbox_inches="tight")
        data = buf.getvalue()
        w, h = figure.get_size_inches()
        meta = {"format": "png", "dpi": float(figure.dpi), "inches": [float(w), float(h)]}
        return [
            _Source(
                _with_suffix(name, ".png"),
                Artifact.Kind.FIGURE,
                lambda: io.BytesIO(data),
                len(data),
                True,
                meta,
            )
        ]
    if hasattr(obj, "read"):
        if name is None:
            own = getattr(obj, "name", None)
            if not isinstance(own, str) or not own:
                raise _needs_name("a file object without a name", "data.bin")
            name = check_artifact_name(Path(own).name)
        seekable = bool(getattr(obj, "seekable", lambda: False)())
        start = obj.tell() if seekable else 0
        size = None
        if seekable:
            obj.seek(0, os.SEEK_END)
            size = obj.tell() - start
            obj.seek(start)

        def opener() -> IO[bytes]:
            if seekable:
                obj.seek(start)
            return _BytesReader(obj)

        return [_Source(name, Artifact.Kind.FILE, opener, size, seekable, {})]
    raise InvalidValue(
        f"Cannot log a {type(obj).__name__} as an artifact. Pass a file path, a directory, "
        f"bytes, a binary file object, a pandas DataFrame or a matplotlib figure."
    )


def _file_source(path: Path, name: str, kind: str) -> _Source:
    name = check_artifact_name(name)
    size = path.stat().st_size
    return _Source(name, kind, lambda: open(path, "rb"), size, True, {"source": str(path)})


def _module(name: str) -> Any:
    import sys

    return sys.modules.get(name)


def _figure_of(obj: Any) -> Any:
    mpl_figure = _module("matplotlib.figure")
    if mpl_figure is None:
        return None
    if isinstance(obj, mpl_figure.Figure):
        return obj
    fig = getattr(obj, "figure", None)  # an Axes
    if isinstance(fig, mpl_figure.Figure) and hasattr(obj, "plot"):
        return fig
    return None


class _BytesReader(io.RawIOBase):
    """Reads a user's file object, turning text into UTF-8 bytes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while len(self._pending) < len(b):
            chunk = self._inner.read(max(len(b), CHUNK))
            if not chunk:
                break
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            self._pending += bytes(chunk)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Hashing(io.RawIOBase):
    """Passes bytes through while hashing and counting them (and moving a progress bar)."""

    def __init__(self, inner: IO[bytes], bar: Any = None) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()
        self.size = 0
        self._bar = bar

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        if not data:
            return 0
        n = len(data)
        b[:n] = data
        self.sha.update(data)
        self.size += n
        if self._bar is not None:
            self._bar.update(n)
        return n


def _hash(src: _Source) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with src.opener() as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _progress(total: int | None, name: str) -> Any:
    if not total or total < PROGRESS_MIN_BYTES or not conf.get("PROGRESS"):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"upload {name}",
        leave=False,
    )


# -- blobs -----------------------------------------------------------------------------------
def blob_name(sha256: str) -> str:
    prefix = str(conf.get("BLOB_PREFIX")).strip("/")
    return f"{prefix}/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _tmp_name() -> str:
    prefix = str(conf.get("BLOB_PREFIX")).strip("/")
    return f"{prefix}/tmp/{uuid.uuid4().hex}"


def _existing_blob(sha256: str) -> Blob | None:
    blob = Blob.objects.filter(sha256=sha256).first()
    if blob is not None and default_storage.exists(blob.storage_name):
        return blob
    return None


def _upload(src: _Source, expected_sha: str | None) -> tuple[str, int, str]:
    """Store ``src`` at its content address; returns (sha256, size, storage name)."""
    storage = default_storage
    bar = _progress(src.size, src.name)
    tmp = _tmp_name()
    leftovers = {tmp}
    try:
        with src.opener() as raw:
            reader = _Hashing(raw, bar)
            saved = storage.save(tmp, File(io.BufferedReader(reader, CHUNK), name=tmp))
        leftovers.add(saved)
        sha = reader.sha.hexdigest()
        if expected_sha is not None and sha != expected_sha:
            raise StorageError(
                f"Artifact {src.name!r} changed while it was being stored (its bytes no longer "
                f"match the hash taken before the upload); log it again once it is written."
            )
        final = blob_name(sha)
        _move(storage, saved, final)
        leftovers.clear()
        return sha, reader.size, final
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(
            f"Could not store artifact {src.name!r} ({type(exc).__name__}: {exc}); check that "
            f"the storage location is writable and has space, then log it again."
        ) from exc
    finally:
        if bar is not None:
            bar.close()
        for name in leftovers:
            try:
                if storage.exists(name):
                    storage.delete(name)
            except Exception:  # the temp file is unreferenced either way
                pass


def _move(storage: Any, tmp: str, final: str) -> None:
    """Make ``tmp``'s complete bytes visible at ``final`` (atomically on a local filesystem)."""
    if isinstance(storage, FileSystemStorage):
        src, dst = storage.path(tmp), storage.path(final)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
        return
    # Object stores make an object visible only once it is completely written.
    if storage.exists(final):
        storage.delete(tmp)
        return
    with storage.open(tmp, "rb") as fh:
        got = storage.save(final, fh)
    storage.delete(tmp)
    if got != final:
        raise StorageError(
            f"The storage saved blob {final!r} under another name ({got!r}); tracker needs a "
            f"storage that keeps the names it is given (file_overwrite or equivalent)."
        )


# -- logging and reading -----------------------------------------------------------------------
def log_artifact(
    run: Run,
    obj: Any,
    name: str | None = None,
    *,
    overwrite: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> list[ArtifactInfo]:
    """Store ``obj`` as one artifact (a directory: one per file) of ``run``.

    Re-logging identical bytes under the same name is a no-op; other bytes under a taken name
    raise :class:`Conflict` unless ``overwrite``.

    Raises:
        InvalidValue: an unsupported object, a bad name, a missing path. Nothing is stored.
        Conflict: the name holds other bytes and ``overwrite`` is false. Nothing is stored.
        StorageError: the storage failed; no artifact becomes visible.
    """
    from tracker.services._runs_values import json_value

    extra = json_value(dict(metadata or {}), "metadata") if metadata is not None else {}
    sources = _sources(obj, name)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InvalidValue("Two files map to the same artifact name; rename one of them.")
    existing = {
        a.name: a.sha256
        for a in Artifact.objects.filter(run=run, name__in=names).only("name", "sha256")
    }
    stored: list[tuple[_Source, str, int, str]] = []
    for src in sources:
        sha = size = None
        if src.seekable:
            sha, size = _hash(src)
            _check_conflict(run, src.name, sha, existing, overwrite)
            blob = _existing_blob(sha)
            if blob is not None:
                stored.append((src, sha, size, blob.storage_name))
                continue
        sha, size, storage_name = _upload(src, sha)
        _check_conflict(run, src.name, sha, existing, overwrite)
        stored.append((src, sha, size, storage_name))
    now = timezone.now()
    out = []
    with transaction.atomic():
        for src, sha, size, storage_name in stored:
            # Locked, so `tracker gc` (which locks a blob row before deleting its file) cannot
            # remove it now; if gc removed it after we looked it up, store the bytes again.
            blob, _ = Blob.objects.select_for_update().get_or_create(
                sha256=sha, defaults={"size": size, "storage_name": storage_name, "created_at": now}
            )
            if not default_storage.exists(storage_name):
                storage_name = _upload(src, sha)[2]
            if blob.storage_name != storage_name:
                Blob.objects.filter(pk=sha).update(storage_name=storage_name)
                blob.storage_name = storage_name
            art, created = Artifact.objects.select_for_update().get_or_create(
                run=run,
                name=src.name,
                defaults={
                    "blob": blob,
                    "kind": src.kind,
                    "size": size,
                    "sha256": sha,
                    "metadata": {**src.metadata, **extra},
                    "created_at": now,
                },
            )
            if not created and art.sha256 != sha:
                if not overwrite:
                    raise _conflict(run, src.name)
                art.blob, art.kind, art.size, art.sha256 = blob, src.kind, size, sha
                art.metadata = {**src.metadata, **extra}
                art.created_at = now
                art.save()
            out.append(ArtifactInfo.from_model(art, run.uid))
    return out


def _conflict(run: Run, name: str) -> Conflict:
    return Conflict(
        f"Run {run.uid} already has an artifact {name!r} with other content. Use another "
        f"name, or pass overwrite=True to replace it."
    )


def _check_conflict(
    run: Run, name: str, sha: str, existing: Mapping[str, str], overwrite: bool
) -> None:
    if name in existing and existing[name] != sha and not overwrite:
        raise _conflict(run, name)


def list_artifacts(run: Run) -> list[ArtifactInfo]:
    return [
        ArtifactInfo.from_model(a, run.uid)
        for a in Artifact.objects.filter(run=run).select_related("blob").order_by("name")
    ]


def get_artifact(run: Run, name: str) -> ArtifactInfo:
    a = Artifact.objects.filter(run=run, name=name).select_related("blob").first()
    if a is None:
        known = list(
            Artifact.objects.filter(run=run).order_by("name").values_list("name", flat=True)[:10]
        )
        raise ArtifactNotFound(
            f"Run {run.uid} has no artifact {name!r}. Its artifacts: "
            f"{', '.join(known) if known else 'none'}."
        )
    return ArtifactInfo.from_model(a, run.uid)


def open_artifact(info: ArtifactInfo) -> IO[bytes]:
    """The artifact's bytes as a binary file object (close it when done)."""
    try:
        return default_storage.open(info.storage_name, "rb")
    except (FileNotFoundError, OSError) as exc:
        raise StorageError(
            f"The bytes of artifact {info.name!r} (blob {info.sha256[:12]}) are missing from the "
            f"storage ({exc}); the storage location may have changed."
        ) from None


def read_artifact(info: ArtifactInfo) -> bytes:
    with open_artifact(info) as fh:
        return fh.read()


def download_artifact(info: ArtifactInfo, path: str | os.PathLike[str] | None = None) -> Path:
    """Copy the artifact to ``path`` (a file, or an existing directory; default: ./<name>),
    verifying its sha256; the file appears only once complete."""
    if path is None:
        target = Path.cwd() / info.name
    else:
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / posixpath.basename(info.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    sha = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, open_artifact(info) as src:
            for chunk in _chunks(src):
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != info.sha256:
            raise StorageError(
                f"Artifact {info.name!r} is corrupted in the storage (sha256 mismatch); it was "
                f"not downloaded."
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(CHUNK):
        yield chunk


def load_artifact(info: ArtifactInfo) -> Any:
    """A DataFrame for Parquet artifacts, bytes for everything else."""
    data = read_artifact(info)
    if info.kind == Artifact.Kind.DATAFRAME:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    return data
