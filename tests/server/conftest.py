"""Fixtures for the gRPC integration tests: a real broker served on loopback
(port 0) over real files in ``tmp_path``, and plain generated stubs talking to it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest

from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2_grpc
from logstore.server.app import RunningServer, serve


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(data_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start brokers (``start_server(dir=None, **serve_kwargs)``); all are stopped at teardown."""
    started: list[RunningServer] = []

    def start(directory: Path | None = None, **kwargs: object) -> RunningServer:
        running = serve(directory or data_dir, "127.0.0.1:0", **kwargs)
        started.append(running)
        return running

    def stop_all() -> None:
        """Stop every broker started so far (cleanly)."""
        for running in reversed(started):
            running.stop(0.5)

    start.stop_all = stop_all  # type: ignore[attr-defined]
    yield start
    for running in reversed(started):
        running.stop(0.5)


@pytest.fixture
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server()


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture
def log_stub(channel: grpc.Channel) -> log_pb2_grpc.LogStub:
    return log_pb2_grpc.LogStub(channel)


@pytest.fixture
def admin_stub(channel: grpc.Channel) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(channel)


@pytest.fixture
def create_topic(admin_stub: admin_pb2_grpc.AdminStub) -> Callable[..., admin_pb2.Topic]:
    """``create_topic(name, partition_count=1, **TopicConfig fields)`` through the Admin service."""

    def create(name: str, partition_count: int = 1, **config: object) -> admin_pb2.Topic:
        response = admin_stub.CreateTopic(
            admin_pb2.CreateTopicRequest(
                topic=name, partition_count=partition_count, config=admin_pb2.TopicConfig(**config)
            ),
            timeout=10,
        )
        assert response.topic.name == name and response.topic.partition_count == partition_count
        return response.topic

    return create


@pytest.fixture
def connect() -> Iterator[Callable[[RunningServer], tuple[admin_pb2_grpc.AdminStub, log_pb2_grpc.LogStub]]]:
    """``connect(running) -> (admin_stub, log_stub)`` for a server started with ``start_server``."""
    channels: list[grpc.Channel] = []

    def open_stubs(running: RunningServer) -> tuple[admin_pb2_grpc.AdminStub, log_pb2_grpc.LogStub]:
        ch = grpc.insecure_channel(running.address)
        channels.append(ch)
        return admin_pb2_grpc.AdminStub(ch), log_pb2_grpc.LogStub(ch)

    yield open_stubs
    for ch in channels:
        ch.close()
