"""Managing topics: create, describe, list, grow and delete them, and look up offsets.

``Admin`` maps one method to one RPC of ``admin.proto`` (plus ``list_offsets``
for ``Log.ListOffsets``) and returns the value objects of
``logstore.client.messages``.  Failures raise the ``logstore.errors`` class of
the broker's status code (``NotFound``, ``AlreadyExists``, ...).

What it does not do: retry, or wait for a broker that is not up yet (a call
then fails with ``LogClosed``).  Every call has a deadline (``timeout``
seconds, 30 by default).
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

import grpc

from logstore.client._channel import call_unary, open_channel
from logstore.client.messages import PartitionInfo, PartitionOffsets, TopicConfig, TopicDescription, TopicInfo
from logstore.errors import InvalidArgument
from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc

__all__ = ["Admin", "DURABILITIES", "to_epoch_ms"]

DURABILITIES = {
    "always": admin_pb2.DURABILITY_ALWAYS,
    "interval": admin_pb2.DURABILITY_INTERVAL,
    "os": admin_pb2.DURABILITY_OS,
}
_DURABILITY_NAMES = {v: k for k, v in DURABILITIES.items()}


def to_epoch_ms(when: datetime) -> int:
    """Milliseconds since the Unix epoch; a naive datetime is taken as local time."""
    return int(when.timestamp() * 1000)


def _config_from_pb(config: admin_pb2.TopicConfig) -> TopicConfig:
    def opt(name: str) -> int | None:
        return getattr(config, name) if config.HasField(name) else None

    return TopicConfig(
        retention_ms=opt("retention_ms"),
        retention_bytes=opt("retention_bytes"),
        segment_bytes=opt("segment_bytes"),
        durability=_DURABILITY_NAMES.get(config.durability, "unspecified"),
        durability_interval_ms=opt("durability_interval_ms"),
        max_record_bytes=opt("max_record_bytes"),
        max_batch_bytes=opt("max_batch_bytes"),
    )


def _topic_from_pb(topic: admin_pb2.Topic) -> TopicInfo:
    return TopicInfo(topic.name, topic.partition_count, _config_from_pb(topic.config))


def _durability(value: str | int | None) -> int:
    if value is None:
        return admin_pb2.DURABILITY_UNSPECIFIED
    if isinstance(value, str):
        try:
            return DURABILITIES[value.lower()]
        except KeyError:
            raise InvalidArgument(
                f"durability {value!r} is not known: use 'always', 'interval' or 'os'"
            ) from None
    return int(value)


class Admin:
    """A connection to a broker's Admin service (and ``Log.ListOffsets``).

    Usable as a context manager; ``close()`` closes the channel unless the
    channel was lent by another client object.
    """

    def __init__(self, broker: str | None = None, *, timeout: float = 30.0, _channel: tuple[grpc.Channel, str] | None = None) -> None:
        self._owns_channel = _channel is None
        self._channel, self.target = _channel if _channel is not None else open_channel(broker)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        self._log = log_pb2_grpc.LogStub(self._channel)
        self.timeout = timeout

    # -- topics -------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        segment_bytes: int | None = None,
        durability: str | int | None = None,
        durability_interval_ms: int | None = None,
        max_record_bytes: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> TopicInfo:
        """Create a topic with ``partitions`` empty partitions; unset settings take the
        broker's defaults.  ``durability`` is ``"always"``, ``"interval"`` or ``"os"``."""
        config = admin_pb2.TopicConfig(
            retention_ms=retention_ms,
            retention_bytes=retention_bytes,
            segment_bytes=segment_bytes,
            durability=_durability(durability),
            durability_interval_ms=durability_interval_ms,
            max_record_bytes=max_record_bytes,
            max_batch_bytes=max_batch_bytes,
        )
        request = admin_pb2.CreateTopicRequest(topic=name, partition_count=partitions, config=config)
        response = call_unary(self._admin.CreateTopic, request, self.target, self.timeout)
        return _topic_from_pb(response.topic)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its records."""
        call_unary(self._admin.DeleteTopic, admin_pb2.DeleteTopicRequest(topic=name), self.target, self.timeout)

    def list_topics(self, *, include_internal: bool = False) -> list[TopicInfo]:
        """Every topic, in ascending order of name (all pages)."""
        topics: list[TopicInfo] = []
        token = ""
        while True:
            request = admin_pb2.ListTopicsRequest(page_token=token, include_internal=include_internal)
            response = call_unary(self._admin.ListTopics, request, self.target, self.timeout)
            topics.extend(_topic_from_pb(t) for t in response.topics)
            token = response.next_page_token
            if not token:
                return topics

    def describe_topic(self, name: str) -> TopicDescription:
        """A topic's configuration and the state of each partition."""
        response = call_unary(
            self._admin.DescribeTopic, admin_pb2.DescribeTopicRequest(topic=name), self.target, self.timeout
        )
        topic = response.topic
        partitions = tuple(
            PartitionInfo(p.partition, p.log_start_offset, p.log_end_offset, p.size_bytes, p.segment_count)
            for p in response.partitions
        )
        return TopicDescription(topic.name, topic.partition_count, _config_from_pb(topic.config), partitions)

    def create_partitions(self, name: str, partition_count: int) -> TopicInfo:
        """Raise a topic's partition count to ``partition_count`` (never lowers it)."""
        request = admin_pb2.CreatePartitionsRequest(topic=name, partition_count=partition_count)
        response = call_unary(self._admin.CreatePartitions, request, self.target, self.timeout)
        return _topic_from_pb(response.topic)

    # -- offsets ------------------------------------------------------------------

    def list_offsets(
        self,
        topic: str,
        partitions: int | Iterable[int] | None = None,
        spec: str | int | datetime = "latest",
    ) -> dict[int, PartitionOffsets]:
        """Offsets of some partitions (``None``: all), by partition.

        ``spec`` is ``"earliest"`` (log start), ``"latest"`` (log end), a
        timestamp in epoch milliseconds or a ``datetime``: the offset of the
        first record at or after that time, else the log end.
        """
        if partitions is None:
            wanted: list[int] = []
        elif isinstance(partitions, int):
            wanted = [partitions]
        else:
            wanted = list(partitions)
        request = log_pb2.ListOffsetsRequest(topic=topic, partitions=wanted)
        if isinstance(spec, datetime):
            request.timestamp_ms = to_epoch_ms(spec)
        elif isinstance(spec, str):
            if spec == "earliest":
                request.position = log_pb2.LOG_POSITION_EARLIEST
            elif spec == "latest":
                request.position = log_pb2.LOG_POSITION_LATEST
            else:
                raise InvalidArgument(
                    f"offset spec {spec!r} is not known: use 'earliest', 'latest', "
                    "a timestamp in ms or a datetime"
                )
        elif isinstance(spec, int) and not isinstance(spec, bool):
            request.timestamp_ms = spec
        else:
            raise InvalidArgument(f"offset spec must be 'earliest', 'latest', an int or a datetime, got {spec!r}")
        response = call_unary(self._log.ListOffsets, request, self.target, self.timeout)
        return {
            p.partition: PartitionOffsets(
                p.partition,
                p.offset,
                p.timestamp_ms if p.HasField("timestamp_ms") else None,
                p.log_start_offset,
                p.log_end_offset,
            )
            for p in response.partitions
        }

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Close the channel (if this object opened it)."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Admin(broker={self.target!r})"
