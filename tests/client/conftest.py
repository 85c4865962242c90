"""A real broker on loopback for the client tests: one server per session, a fresh topic per test."""

from __future__ import annotations

import itertools
import re
from typing import Callable, Iterator

import pytest

from logstore.client import Admin

_counter = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from logstore.server.app import serve

    running = serve(tmp_path_factory.mktemp("broker") / "data", listen="127.0.0.1:0")
    yield running
    running.stop(grace=1.0)


@pytest.fixture
def broker(server) -> str:  # noqa: ANN001
    return server.address


@pytest.fixture
def admin(broker: str) -> Iterator[Admin]:
    with Admin(broker) as a:
        yield a


@pytest.fixture
def make_topic(admin: Admin, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic named after the test (unique per call) and return its name."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:60]

    def make(partitions: int = 1, **config: object) -> str:
        name = f"{base}-{next(_counter)}"
        admin.create_topic(name, partitions, **config)
        return name

    return make
