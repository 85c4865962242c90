"""Managing topics and consumer groups: create, describe, list, grow and delete
topics, look up offsets, list, describe, seek, delete groups and commit
or fetch their offsets, and set retry policies and list, redrive or purge
dead letters.

``Admin`` maps one method to one RPC of ``admin.proto`` (plus ``list_offsets``
for ``Log.ListOffsets`` and the group methods for the unary RPCs of
``groups.proto``) and returns the value objects of
``logstore.client.messages``.  Failures raise the ``logstore.errors`` class of
the broker's status code (``NotFound``, ``AlreadyExists``, ...).

What it does not do: retry, or wait for a broker that is not up yet (a call
then fails with ``LogClosed``).  Every call has a deadline (``timeout``
seconds, 30 by default), except ``redrive_dead_letters``, which lasts as
long as the redrive does (it is paced by ``records_per_second``); a redrive
cut short (an exception in ``progress``, Ctrl-C) cancels the call, and
calling it again resumes it.  ``list_dead_letters`` asks for the next page
only as its iterator advances, so the pages show the dead-letter topic as
it is then: a redrive or purge running meanwhile may leave some out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Iterator, Mapping

import grpc

from logstore.client._channel import ClientTLS, call_unary, open_channel, translate_rpc_error
from logstore.client.messages import (
    DeadLetter,
    GroupDescription,
    GroupMember,
    GroupPartition,
    GroupSummary,
    OffsetCommit,
    PartitionInfo,
    PartitionOffsets,
    RetryPolicy,
    TopicConfig,
    TopicDescription,
    TopicInfo,
)
from logstore.errors import InvalidArgument
from logstore._proto.logstore.v1 import admin_pb2, admin_pb2_grpc, groups_pb2, groups_pb2_grpc, log_pb2, log_pb2_grpc

__all__ = ["Admin", "DURABILITIES", "to_epoch_ms", "retry_policy_to_pb"]

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


_DELIVERY_MODE_NAMES = {
    groups_pb2.DELIVERY_MODE_PARTITION_ORDERED: "partition_ordered",
    groups_pb2.DELIVERY_MODE_KEY_ORDERED: "key_ordered",
}
_GUARANTEE_NAMES = {
    groups_pb2.DELIVERY_GUARANTEE_AT_LEAST_ONCE: "at_least_once",
    groups_pb2.DELIVERY_GUARANTEE_AT_MOST_ONCE: "at_most_once",
}


_MAX_DEAD_LETTER_PAGE = 1000  # ListDeadLettersRequest.page_size upper bound (groups.proto)
_MAX_REDRIVE_RATE = 1_000_000  # RedriveDeadLettersRequest.records_per_second upper bound


def retry_policy_to_pb(policy: RetryPolicy) -> groups_pb2.RetryPolicy:
    """A ``RetryPolicy`` as protobuf; every field is sent, defaults included."""
    if not isinstance(policy, RetryPolicy):
        raise InvalidArgument(f"a retry policy is a logstore.client.RetryPolicy, got {policy!r}")
    try:
        return groups_pb2.RetryPolicy(
            max_attempts=policy.max_attempts,
            delays_ms=policy.delays_ms,
            initial_delay_ms=policy.initial_delay_ms,
            multiplier=policy.multiplier,
            max_delay_ms=policy.max_delay_ms,
            jitter=policy.jitter,
        )
    except ValueError:  # an int outside int32: protobuf refuses it
        raise InvalidArgument(f"{policy!r} has a value out of range (the broker's limits are in groups.proto)") from None


def _dead_letter_from_pb(d: groups_pb2.DeadLetter) -> DeadLetter:
    r = d.record
    return DeadLetter(
        d.partition,
        d.offset,
        r.key if r.HasField("key") else None,
        r.value if r.HasField("value") else None,
        tuple((h.name, h.value) for h in r.headers),
        r.timestamp_ms,
        d.origin_topic,
        d.origin_partition,
        d.origin_offset,
        d.attempts,
        d.first_failure_ms,
        d.error,
        d.dead_lettered_ms,
    )


def _epoch_ms(name: str, when: int | datetime | None) -> int | None:
    if when is None:
        return None
    if isinstance(when, datetime):
        return to_epoch_ms(when)
    if isinstance(when, bool) or not isinstance(when, int):
        raise InvalidArgument(f"{name} must be epoch milliseconds or a datetime, got {when!r}")
    return when


def _offset_commit_from_pb(o: groups_pb2.OffsetCommit) -> OffsetCommit:
    return OffsetCommit(o.topic, o.partition, o.offset, o.metadata, o.commit_time_ms or None)


def _offset_commit_to_pb(item: object) -> groups_pb2.OffsetCommit:
    """An ``OffsetCommit`` or a ``(topic, partition, offset[, metadata])`` tuple as protobuf."""
    if isinstance(item, OffsetCommit):
        topic, partition, offset, metadata = item.topic, item.partition, item.offset, item.metadata
    elif isinstance(item, tuple) and len(item) in (3, 4):
        topic, partition, offset = item[0], item[1], item[2]
        metadata = item[3] if len(item) == 4 else ""
    else:
        raise InvalidArgument(
            f"an offset to commit is an OffsetCommit or a (topic, partition, offset[, metadata]) tuple, got {item!r}"
        )
    for name, value in (("partition", partition), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"the {name} of a committed offset must be an int, got {value!r} in {item!r}")
    return groups_pb2.OffsetCommit(topic=topic, partition=partition, offset=offset, metadata=metadata)


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
    channel was lent by another client object.  ``tls`` (a ``ClientTLS``)
    and ``token`` connect to a broker that serves TLS or checks tokens.
    """

    def __init__(
        self, broker: str | None = None, *, timeout: float = 30.0, _channel: tuple[grpc.Channel, str] | None = None,
        tls: ClientTLS | None = None, token: str | None = None,
    ) -> None:
        self._owns_channel = _channel is None
        self._channel, self.target = _channel if _channel is not None else open_channel(broker, tls=tls, token=token)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        self._log = log_pb2_grpc.LogStub(self._channel)
        self._groups = groups_pb2_grpc.GroupsStub(self._channel)
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
        wanted = _partition_list(partitions)
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

    # -- consumer groups ----------------------------------------------------------

    def list_groups(self) -> list[GroupSummary]:
        """Every group the broker knows (with committed offsets or live members),
        in ascending order of name (all pages)."""
        groups: list[GroupSummary] = []
        token = ""
        while True:
            request = groups_pb2.ListGroupsRequest(page_token=token)
            response = call_unary(self._groups.ListGroups, request, self.target, self.timeout)
            groups.extend(GroupSummary(g.name, g.member_count, tuple(g.topics)) for g in response.groups)
            token = response.next_page_token
            if not token:
                return groups

    def describe_group(self, group: str) -> GroupDescription:
        """A group's members, their assignments, and per partition the committed
        offset, log end, lag, owner and records in flight."""
        response = call_unary(
            self._groups.DescribeGroup, groups_pb2.DescribeGroupRequest(group=group), self.target, self.timeout
        )
        members = tuple(
            GroupMember(
                m.member_id,
                m.client_id,
                m.peer,
                tuple((tp.topic, tp.partition) for tp in m.assignment),
                m.in_flight_records,
                m.joined_ms,
                m.last_seen_ms,
            )
            for m in response.members
        )
        partitions = tuple(
            GroupPartition(
                p.topic,
                p.partition,
                p.committed_offset if p.committed_offset >= 0 else None,
                p.log_end_offset,
                p.lag,
                p.member_id or None,
                p.in_flight_records,
            )
            for p in response.partitions
        )
        return GroupDescription(
            response.group,
            response.generation,
            _DELIVERY_MODE_NAMES.get(response.delivery_mode, "unspecified"),
            _GUARANTEE_NAMES.get(response.delivery_guarantee, "unspecified"),
            members,
            partitions,
        )

    def seek_group(
        self,
        group: str,
        topic: str,
        *,
        earliest: bool = False,
        latest: bool = False,
        offset: int | None = None,
        timestamp_ms: int | datetime | None = None,
        partitions: int | Iterable[int] | None = None,
    ) -> dict[int, OffsetCommit]:
        """Move a group's committed offsets for ``topic`` (every partition, or
        ``partitions``) in one atomic write, to exactly one of: the earliest or
        latest offset, ``offset`` (clamped to each partition's log), or the
        first record at or after ``timestamp_ms`` (epoch ms or a ``datetime``).
        Works while members consume: their records in flight there are
        withdrawn.  Returns the offsets now stored, by partition."""
        chosen = [name for name, on in (
            ("earliest", earliest),
            ("latest", latest),
            ("offset", offset is not None),
            ("timestamp_ms", timestamp_ms is not None),
        ) if on]
        if len(chosen) != 1:
            raise InvalidArgument(
                "seek_group needs exactly one target: earliest=True, latest=True, offset=N or timestamp_ms=T"
                + (f"; got {', '.join(chosen)}" if chosen else "")
            )
        if earliest:
            target = groups_pb2.SeekTarget(offset_position=groups_pb2.OFFSET_POSITION_EARLIEST)
        elif latest:
            target = groups_pb2.SeekTarget(offset_position=groups_pb2.OFFSET_POSITION_LATEST)
        elif offset is not None:
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise InvalidArgument(f"offset must be an int, got {offset!r}")
            target = groups_pb2.SeekTarget(offset=offset)
        else:
            ms = to_epoch_ms(timestamp_ms) if isinstance(timestamp_ms, datetime) else timestamp_ms
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise InvalidArgument(f"timestamp_ms must be epoch milliseconds or a datetime, got {timestamp_ms!r}")
            target = groups_pb2.SeekTarget(timestamp_ms=ms)
        wanted = _partition_list(partitions)
        request = groups_pb2.SeekGroupRequest(group=group, topic=topic, partitions=wanted, target=target)
        response = call_unary(self._groups.SeekGroup, request, self.target, self.timeout)
        return {o.partition: _offset_commit_from_pb(o) for o in response.offsets}

    def delete_group(self, group: str) -> None:
        """Forget a group's committed offsets; refused while members consume."""
        call_unary(self._groups.DeleteGroup, groups_pb2.DeleteGroupRequest(group=group), self.target, self.timeout)

    def commit_offsets(
        self,
        group: str,
        offsets: Mapping[tuple[str, int], int] | Iterable[OffsetCommit | tuple],
    ) -> None:
        """Store committed offsets for a group that reads with ``Reader``/Fetch and
        commits itself, as one durable, atomic write.  ``offsets`` maps
        ``(topic, partition)`` to an offset, or lists ``OffsetCommit`` objects
        or ``(topic, partition, offset[, metadata])`` tuples.  Refused
        (``FailedPrecondition``) while members consume the group on streams."""
        if isinstance(offsets, Mapping):
            items = []
            for tp, offset in offsets.items():
                if not (isinstance(tp, tuple) and len(tp) == 2):
                    raise InvalidArgument(f"the keys of an offsets mapping are (topic, partition) pairs, got {tp!r}")
                items.append(_offset_commit_to_pb((tp[0], tp[1], offset)))
        else:
            items = [_offset_commit_to_pb(item) for item in offsets]
        request = groups_pb2.CommitOffsetsRequest(group=group, offsets=items)
        call_unary(self._groups.CommitOffsets, request, self.target, self.timeout)

    def fetch_committed_offsets(
        self, group: str, topics: str | Iterable[str] | None = None
    ) -> dict[tuple[str, int], OffsetCommit]:
        """A group's committed offsets (of every topic, or of ``topics``) by
        ``(topic, partition)``, sorted; empty if it never committed."""
        wanted = [] if topics is None else [topics] if isinstance(topics, str) else list(topics)
        request = groups_pb2.FetchCommittedOffsetsRequest(group=group, topics=wanted)
        response = call_unary(self._groups.FetchCommittedOffsets, request, self.target, self.timeout)
        return {(o.topic, o.partition): _offset_commit_from_pb(o) for o in response.offsets}

    # -- retries and dead letters ---------------------------------------------------

    def set_retry_policy(
        self, group: str, topic: str, policy: RetryPolicy | None
    ) -> tuple[tuple[str, ...], str | None]:
        """Store ``group``'s retry policy for ``topic`` durably (``None`` clears
        it) and create the topics it needs.  Returns the retry tier topics, in
        order of their waits, and the dead-letter topic: ``((), None)`` after
        a clear.  Members consuming now pick the policy up within a moment."""
        request = groups_pb2.SetRetryPolicyRequest(group=group, topic=topic)
        if policy is not None:
            request.policy.CopyFrom(retry_policy_to_pb(policy))
        response = call_unary(self._groups.SetRetryPolicy, request, self.target, self.timeout)
        return tuple(response.retry_topics), response.dead_letter_topic or None

    def list_dead_letters(
        self,
        group: str,
        topic: str,
        *,
        key: bytes | str | None = None,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[DeadLetter]:
        """``group``'s dead letters for ``topic``, oldest first per partition, in
        partition order: those with ``key`` (bytes, or str as UTF-8) only, and
        dead-lettered at or after ``since`` and before ``until`` (epoch ms or
        a ``datetime``).  The first page is fetched now (so ``NotFound``, for
        a group that never had a retry policy for ``topic``, raises here), the
        next ones as the iterator reaches them, ``page_size`` (1 to 1000) at
        a time."""
        if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= _MAX_DEAD_LETTER_PAGE:
            raise InvalidArgument(f"page_size must be a whole number from 1 to {_MAX_DEAD_LETTER_PAGE}, got {page_size!r}")
        if isinstance(key, str):
            key = key.encode("utf-8")
        elif key is not None and not isinstance(key, bytes):
            raise InvalidArgument(f"key must be bytes or str, got {key!r}")
        request = groups_pb2.ListDeadLettersRequest(
            group=group,
            topic=topic,
            key=key,
            since_ms=_epoch_ms("since", since),
            until_ms=_epoch_ms("until", until),
            page_size=page_size,
        )
        first = call_unary(self._groups.ListDeadLetters, request, self.target, self.timeout)
        return self._dead_letter_pages(request, first)

    def _dead_letter_pages(
        self, request: groups_pb2.ListDeadLettersRequest, response: groups_pb2.ListDeadLettersResponse
    ) -> Iterator[DeadLetter]:
        while True:
            for letter in response.dead_letters:
                yield _dead_letter_from_pb(letter)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
            response = call_unary(self._groups.ListDeadLetters, request, self.target, self.timeout)

    def redrive_dead_letters(
        self,
        group: str,
        topic: str,
        *,
        records_per_second: int = 1000,
        progress: Callable[[int, int], object] | None = None,
        key: bytes | str | None = None,
        since: int | datetime | None = None,
        until: int | datetime | None = None,
    ) -> int:
        """Put the dead letters of ``group`` for ``topic`` (all, or those with ``key`` and
        dead-lettered in ``[since, until)``) back into the group's delivery path, attempts
        reset, at most ``records_per_second`` (1 to 1000000); returns how many were redriven.  ``progress(redriven,
        total)`` is called for each progress report of the broker (``total``:
        the dead letters there were when the redrive started).  Blocks until
        the redrive is done; see the module docstring for cutting it short."""
        if isinstance(records_per_second, bool) or not isinstance(records_per_second, int) or not (
            1 <= records_per_second <= _MAX_REDRIVE_RATE
        ):
            raise InvalidArgument(
                f"records_per_second must be a whole number from 1 to {_MAX_REDRIVE_RATE}, got {records_per_second!r}"
            )
        request = groups_pb2.RedriveDeadLettersRequest(group=group, topic=topic, records_per_second=records_per_second)
        if key is not None:
            request.key = key.encode("utf-8") if isinstance(key, str) else bytes(key)
        if since is not None:
            request.since_ms = to_epoch_ms(since) if isinstance(since, datetime) else since
        if until is not None:
            request.until_ms = to_epoch_ms(until) if isinstance(until, datetime) else until
        call = self._groups.RedriveDeadLetters(request)
        redriven = 0
        try:
            for update in call:
                redriven = update.redriven
                if progress is not None:
                    progress(update.redriven, update.total)
        except grpc.RpcError as exc:
            raise translate_rpc_error(exc, self.target) from None
        finally:
            call.cancel()  # a no-op once the stream ended; stops the broker if we did not get there
        return redriven

    def purge_dead_letters(self, group: str, topic: str) -> int:
        """Drop every dead letter of ``group`` for ``topic``; returns how many."""
        request = groups_pb2.PurgeDeadLettersRequest(group=group, topic=topic)
        return call_unary(self._groups.PurgeDeadLetters, request, self.target, self.timeout).purged

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


def _partition_list(partitions: "int | Iterable[int] | None") -> list[int]:
    """The partitions a call names: none (all), one number, or several."""
    if partitions is None:
        return []
    if isinstance(partitions, int):
        return [partitions]
    return list(partitions)
