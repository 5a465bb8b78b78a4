"""Run notebook cells in a real ipykernel through nbclient, and read their outputs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import tempfile

from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def kernel_manager() -> KernelManager:
    """A python3 kernel over IPC sockets in a private directory (no TCP ports, no warning)."""
    sockets = tempfile.mkdtemp(prefix="tracker-kernel-")
    return KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "k"))


@dataclass
class CellResult:
    source: str
    outputs: list[dict[str, Any]]

    @property
    def stdout(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs if o.get("name") == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.get("text", "") for o in self.outputs if o.get("name") == "stderr")

    @property
    def error(self) -> dict[str, Any] | None:
        return next((o for o in self.outputs if o.get("output_type") == "error"), None)

    @property
    def result(self) -> str:
        for o in self.outputs:
            if o.get("output_type") == "execute_result":
                return o["data"].get("text/plain", "")
        return ""


def run_cells(
    cells: list[str],
    env: Mapping[str, str],
    *,
    allow_errors: bool = True,
    timeout: int = 120,
    cwd: Path | None = None,
) -> list[CellResult]:
    """Execute ``cells`` in one fresh kernel whose environment is ``env``; return each cell's outputs."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    run_notebook(nb, env, allow_errors=allow_errors, timeout=timeout, cwd=cwd)
    return [CellResult(c.source, c.outputs) for c in nb.cells]


def run_notebook(
    nb: Any,
    env: Mapping[str, str],
    *,
    allow_errors: bool = False,
    timeout: int = 300,
    cwd: Path | None = None,
) -> Any:
    """Execute a notebook object in place with a kernel started in ``env``."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        km = kernel_manager()
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(cwd or Path.cwd())}},
        )
        try:
            client.execute()
        finally:
            _shutdown(km)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


__all__ = ["CellExecutionError", "CellResult", "run_cells", "run_notebook"]


def _shutdown(km: KernelManager) -> None:
    """nbclient leaves a kernel it did not create running; stop it and remove its sockets."""
    if km.has_kernel:
        km.shutdown_kernel(now=True)
    km.cleanup_resources()


class KernelSession:
    """One live kernel; ``run(source)`` executes a cell and returns its outputs."""

    def __init__(self, client: NotebookClient, nb: Any) -> None:
        self._client = client
        self._nb = nb

    def run(self, source: str) -> CellResult:
        cell = nbformat.v4.new_code_cell(source)
        self._nb.cells.append(cell)
        self._client.execute_cell(cell, len(self._nb.cells) - 1)
        return CellResult(source, cell.outputs)


from contextlib import contextmanager  # noqa: E402


@contextmanager
def kernel_session(env: Mapping[str, str], *, timeout: int = 120):
    """A kernel kept alive across ``run`` calls, for checks made while it is running."""
    nb = nbformat.v4.new_notebook()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        km = kernel_manager()
        client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=True)
        try:
            with client.setup_kernel():
                yield KernelSession(client, nb)
        finally:
            _shutdown(km)
    finally:
        os.environ.clear()
        os.environ.update(saved)
