"""Fixtures for client tests that need a broker on a ``ManualClock`` (deadlines, retry waits).

A test module opts in with ``from clocked_broker import admin, broker, clock, names, server``:
each module gets its own broker, so time moved by one module's tests never leaks into
another's.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import pytest

from logstore.client import Admin
from logstore.clock import ManualClock
from logstore.server.app import RunningServer, serve

__all__ = ["clock", "server", "broker", "admin", "names"]

_counter = itertools.count()


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clock: ManualClock) -> Iterator[RunningServer]:
    running = serve(tmp_path_factory.mktemp("clocked-broker") / "data", "127.0.0.1:0", clock=clock)
    yield running
    running.stop(grace=1.0)


@pytest.fixture
def broker(server: RunningServer) -> str:
    return server.address


@pytest.fixture
def admin(broker: str) -> Iterator[Admin]:
    with Admin(broker) as a:
        yield a


@pytest.fixture
def names(admin: Admin) -> Callable[..., tuple[str, str]]:
    """A fresh (topic, group) pair per call; the topic is created with ``partitions``."""

    def make(partitions: int = 1) -> tuple[str, str]:
        n = next(_counter)
        topic, group = f"t{n}", f"g{n}"
        admin.create_topic(topic, partitions)
        return topic, group

    return make
