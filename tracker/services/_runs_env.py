"""What a run captures about where it ran: host, pid, Python, key package versions, git state.

Cached per process (git for a few seconds per directory), so starting many runs stays cheap:
one ``git`` call costs milliseconds, a run start must cost well under one.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata

# Packages whose versions explain a result; only the installed ones are recorded.
KEY_PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "torch",
    "torchvision",
    "lightning",
    "tensorflow",
    "keras",
    "jax",
    "transformers",
    "datasets",
    "xgboost",
    "lightgbm",
    "catboost",
    "django",
    "tracker",
)
GIT_CACHE_SECONDS = 5.0
GIT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class Environment:
    host: str
    pid: int
    python_version: str
    packages: dict[str, str]
    git_commit: str
    git_dirty: bool | None


_lock = threading.Lock()
_packages: dict[str, str] | None = None
_git_cache: dict[str, tuple[float, str, bool | None]] = {}


def _package_versions() -> dict[str, str]:
    global _packages
    if _packages is None:
        found = {}
        for name in KEY_PACKAGES:
            try:
                found[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            except Exception:  # a broken distribution must not stop a run from starting
                continue
        _packages = found
    return dict(_packages)


def _git(args: list[str], cwd: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # never take the index lock
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git binary, or it hung
    return proc.stdout.strip() if proc.returncode == 0 else None


_cwd: tuple[float, str] | None = None


def _current_dir(now: float) -> str:
    # getcwd() is a system call that can cost a millisecond on a busy machine; a start_run
    # within the cache window of the previous one reuses it.
    global _cwd
    if _cwd is None or now - _cwd[0] >= GIT_CACHE_SECONDS:
        _cwd = (now, os.getcwd())
    return _cwd[1]


def git_state(cwd: str | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the repository containing ``cwd``; ("", None) outside one."""
    now = time.monotonic()
    cwd = os.path.abspath(cwd) if cwd else _current_dir(now)
    with _lock:
        hit = _git_cache.get(cwd)
    if hit and now - hit[0] < GIT_CACHE_SECONDS:
        return hit[1], hit[2]
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        state: tuple[str, bool | None] = ("", None)
    else:
        # Untracked files are ignored: data and outputs usually live beside the code.
        status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
        state = (commit, None if status is None else bool(status))
    with _lock:
        _git_cache[cwd] = (now, *state)
    return state


_host: tuple[int, str] | None = None


def _hostname() -> str:
    global _host
    pid = os.getpid()
    if _host is None or _host[0] != pid:
        _host = (pid, socket.gethostname())
    return _host[1]


def capture() -> Environment:
    """The environment of this process, now."""
    commit, dirty = git_state()
    return Environment(
        host=_hostname(),
        pid=os.getpid(),
        python_version=f"{platform.python_implementation()} {sys.version.split()[0]}",
        packages=_package_versions(),
        git_commit=commit,
        git_dirty=dirty,
    )


def clear_caches() -> None:
    """Forget cached git state and package versions (tests, long-lived processes)."""
    global _packages, _cwd
    with _lock:
        _git_cache.clear()
    _packages = None
    _cwd = None
