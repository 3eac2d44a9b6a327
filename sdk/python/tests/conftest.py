"""Fixtures: a clean client environment for every test, and one real codebox
server per session for the contract tests (``@pytest.mark.server``, see
``_server.py``)."""

from __future__ import annotations

from typing import Iterator

import pytest

from _server import RunningServer, start_server


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass their connection explicitly unless they set these themselves."""
    monkeypatch.delenv("CODEBOX_API_URL", raising=False)
    monkeypatch.delenv("CODEBOX_API_KEY", raising=False)


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    yield from start_server()
