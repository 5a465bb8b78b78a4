"""Fixtures for API tests; the helpers they use live in api_support.py."""

from __future__ import annotations

from typing import Any

import pytest

from api_support import World, make_world, start_server, stop_server


@pytest.fixture
def world(db: None) -> World:
    return make_world()


@pytest.fixture
def live_server_proc(subprocess_env: dict[str, str]) -> Any:
    """A real uvicorn server process on this test's database (committed data, emptied after)."""
    server = start_server(subprocess_env)
    try:
        yield server
    finally:
        stop_server(server)
