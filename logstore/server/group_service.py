"""The Groups service: the Consume stream, committed offsets and group admin.

Thin: every handler translates proto messages to ``GroupCoordinator`` calls
and errors to status codes.  One Consume stream is one coordinator
``Session``: the handler's generator sends what ``Session.next_outbound``
returns, and a reader thread per stream feeds the member's requests to the
session.  The session ends when the client half-closes or sends ``leave``
(OK), cancels or breaks the stream, or the broker removes it (the stream ends
with the session's error).
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import grpc

from logstore._proto.logstore.v1 import groups_pb2, log_pb2, records_pb2
from logstore.broker.assignment import TopicPartition
from logstore.broker.coordinator import (
    ConsumeOptions,
    DeliveryMode,
    GroupCoordinator,
    Guarantee,
    Outbound,
    SeekTarget,
    Session,
    StartPosition,
)
from logstore.broker.names import validate_group_name
from logstore.broker.deadletters import DeadLetterFilter
from logstore.broker.offsets import CommittedOffset
from logstore.broker.retry import RetryPolicy, dlq_topic, tier_topic
from logstore.errors import FailedPrecondition, InvalidArgument
from logstore.server import wire
from logstore.server.log_service import records_of, stamp_of
from logstore.server.paging import decode_page_token, encode_page_token
from logstore.server.status import BadRequest, safe_deserializer, translate_errors, translate_stream_errors

_LOGGER = logging.getLogger(__name__)

__all__ = ["GroupService", "SERVICE_NAME"]

SERVICE_NAME = groups_pb2.DESCRIPTOR.services_by_name["Groups"].full_name
_POLL_S = 0.5
_MAX_PAGE = 1000

g = groups_pb2
_MODES = {
    g.DELIVERY_MODE_UNSPECIFIED: DeliveryMode.PARTITION_ORDERED,
    g.DELIVERY_MODE_PARTITION_ORDERED: DeliveryMode.PARTITION_ORDERED,
    g.DELIVERY_MODE_KEY_ORDERED: DeliveryMode.KEY_ORDERED,
    g.DELIVERY_MODE_UNORDERED: DeliveryMode.UNORDERED,
}
_MODES_OUT = {
    DeliveryMode.PARTITION_ORDERED: g.DELIVERY_MODE_PARTITION_ORDERED,
    DeliveryMode.KEY_ORDERED: g.DELIVERY_MODE_KEY_ORDERED,
    DeliveryMode.UNORDERED: g.DELIVERY_MODE_UNORDERED,
}
_GUARANTEES = {
    g.DELIVERY_GUARANTEE_UNSPECIFIED: Guarantee.AT_LEAST_ONCE,
    g.DELIVERY_GUARANTEE_AT_LEAST_ONCE: Guarantee.AT_LEAST_ONCE,
    g.DELIVERY_GUARANTEE_AT_MOST_ONCE: Guarantee.AT_MOST_ONCE,
}
_GUARANTEES_OUT = {
    Guarantee.AT_LEAST_ONCE: g.DELIVERY_GUARANTEE_AT_LEAST_ONCE,
    Guarantee.AT_MOST_ONCE: g.DELIVERY_GUARANTEE_AT_MOST_ONCE,
}


def options_from_join(join: groups_pb2.Join) -> ConsumeOptions:
    """The coordinator's options for a Join (0 means the default); InvalidArgument if out of range."""
    if join.delivery_mode not in _MODES:
        raise InvalidArgument(f"delivery_mode {join.delivery_mode} is not a DeliveryMode value")
    if join.delivery_guarantee not in _GUARANTEES:
        raise InvalidArgument(f"delivery_guarantee {join.delivery_guarantee} is not a DeliveryGuarantee value")
    which = join.start_position.WhichOneof("position")
    if which == "timestamp_ms":
        start = StartPosition(timestamp_ms=join.start_position.timestamp_ms)
    elif which == "offset_position":
        position = join.start_position.offset_position
        if position not in (g.OFFSET_POSITION_EARLIEST, g.OFFSET_POSITION_LATEST):
            raise InvalidArgument("start_position.offset_position must be OFFSET_POSITION_EARLIEST or _LATEST")
        start = StartPosition(earliest=position == g.OFFSET_POSITION_EARLIEST)
    else:
        start = StartPosition()
    policies = []
    for entry in join.retry_policies:
        if not entry.HasField("policy"):
            raise InvalidArgument(f"retry_policies: the entry for topic {entry.topic!r} has no policy")
        policies.append((entry.topic, policy_from_proto(entry.policy)))
    return ConsumeOptions(
        retry_policies=tuple(policies),
        max_in_flight=join.max_in_flight_records or 1000,
        ack_deadline_ms=join.ack_deadline_ms or 30_000,
        mode=_MODES[join.delivery_mode],
        start=start,
        session_timeout_ms=join.session_timeout_ms or 30_000,
        guarantee=_GUARANTEES[join.delivery_guarantee],
        client_id=join.client_id,
    )


def policy_from_proto(p: groups_pb2.RetryPolicy) -> RetryPolicy:
    """The broker's policy for a proto one (0 means the default for multiplier and max delay)."""
    return RetryPolicy(
        max_attempts=p.max_attempts,
        delays_ms=tuple(p.delays_ms),
        initial_delay_ms=p.initial_delay_ms or 1000,
        multiplier=p.multiplier or 2.0,
        max_delay_ms=p.max_delay_ms or 60_000,
        jitter=p.jitter,
    )


def _ranges(ids: groups_pb2.DeliveryIds) -> list[tuple[int, int]]:
    out = [(i, i + 1) for i in ids.ids]
    out.extend((r.first_id, r.end_id) for r in ids.ranges)
    return out


def _filter(request) -> DeadLetterFilter:  # noqa: ANN001 - ListDeadLetters or RedriveDeadLetters request
    return DeadLetterFilter(
        key=request.key if request.HasField("key") else None,
        since_ms=request.since_ms if request.HasField("since_ms") else None,
        until_ms=request.until_ms if request.HasField("until_ms") else None,
    )


def _decode_position(token: str) -> tuple[int, int]:
    def check(text: str) -> None:
        partition, _, offset = text.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise ValueError(text)

    text = decode_page_token("deadletters", token, "ListDeadLetters", check)
    if not text:
        return (-1, -1)
    partition, _, offset = text.partition(":")
    return int(partition), int(offset)


def _offset_commit(tp: TopicPartition, c: CommittedOffset) -> groups_pb2.OffsetCommit:
    return g.OffsetCommit(
        topic=tp.topic, partition=tp.partition, offset=c.offset, metadata=c.metadata, commit_time_ms=c.commit_time_ms
    )


class GroupService:
    """Handlers of the Groups service, bound to one coordinator."""

    def __init__(self, coordinator: GroupCoordinator) -> None:
        self._coordinator = coordinator

    def shutdown(self) -> None:
        """End every Consume stream (UNAVAILABLE) after committing what was acked."""
        self._coordinator.close()

    # -- Consume ------------------------------------------------------------------------------

    @translate_stream_errors
    def Consume(self, requests: Iterator, context: grpc.ServicerContext) -> Iterator[Outbound]:
        first = next(requests, None)
        if first is None:
            return
        if isinstance(first, BadRequest):
            raise InvalidArgument(first.error)
        if not first.HasField("join"):
            raise InvalidArgument("the first ConsumeRequest on a stream must carry join (group, topics, options)")
        join = first.join
        session = self._coordinator.join(join.group, join.topics, options_from_join(join), context.peer())
        context.add_callback(session.close)
        self._apply(session, first, joined=True)
        reader = threading.Thread(
            target=self._read, args=(session, requests), name=f"logstore-consume-{session.member_id}", daemon=True
        )
        reader.start()
        try:
            while True:
                out = session.next_outbound(_POLL_S)
                if out is not None:
                    yield out
                elif session.ended:
                    if session.end_error is not None:
                        raise session.end_error
                    return
                elif not context.is_active():
                    return
        finally:
            session.close()

    def _read(self, session: Session, requests: Iterator) -> None:
        """The member's requests, applied in order; a half-close is a leave."""
        try:
            for request in requests:
                if isinstance(request, BadRequest):
                    session.heartbeat()
                    session.report(InvalidArgument(request.error))
                    continue
                if self._apply(session, request, joined=False):
                    return
            session.leave()
        except grpc.RpcError:
            session.close()  # cancelled or broken
        except Exception:  # noqa: BLE001 - a bug must not leave a member behind
            _LOGGER.exception("reading the Consume stream of %s failed", session.member_id)
            session.close()

    @staticmethod
    def _apply(session: Session, request: groups_pb2.ConsumeRequest, *, joined: bool) -> bool:
        """Apply one request; True if the member left."""
        session.heartbeat()
        if request.HasField("join") and not joined:
            session.report(FailedPrecondition(
                f"this stream already joined as member {session.member_id}; a stream joins once: "
                "open a new Consume stream to join another group"
            ))
        if request.HasField("ack"):
            session.ack(_ranges(request.ack))
        if request.HasField("nack"):
            session.nack(_ranges(request.nack.ids), request.nack.reason, request.nack.terminal)
        if request.HasField("extend_deadline"):
            session.extend(_ranges(request.extend_deadline.ids), request.extend_deadline.extension_ms)
        if request.leave:
            session.leave()
            return True
        return False

    # -- offsets ---------------------------------------------------------------------------------

    @translate_errors
    def CommitOffsets(self, request: groups_pb2.CommitOffsetsRequest, context: grpc.ServicerContext) -> groups_pb2.CommitOffsetsResponse:
        offsets: dict[TopicPartition, CommittedOffset] = {}
        for o in request.offsets:
            tp = TopicPartition(o.topic, o.partition)
            if tp in offsets:
                raise InvalidArgument(f"partition {tp} is listed twice; list each partition once")
            offsets[tp] = CommittedOffset(o.offset, o.metadata, self._coordinator.clock())
        self._coordinator.commit_offsets(request.group, offsets)
        return g.CommitOffsetsResponse()

    @translate_errors
    def ProduceAndCommit(
        self, request: groups_pb2.ProduceAndCommitRequest, context: grpc.ServicerContext
    ) -> groups_pb2.ProduceAndCommitResponse:
        produce = request.produce
        if not request.HasField("produce"):
            raise InvalidArgument("ProduceAndCommit needs `produce`: the records to append")
        if not produce.HasField("partition"):
            raise InvalidArgument("ProduceAndCommit appends to one partition: set produce.partition")
        if produce.acks not in (log_pb2.ACKS_UNSPECIFIED, log_pb2.ACKS_DURABLE):
            raise InvalidArgument("ProduceAndCommit is always durable: leave produce.acks unset or ACKS_DURABLE")
        if produce.HasField("expected_offset"):
            raise InvalidArgument("ProduceAndCommit does not take expected_offset; fence with if_committed")
        now = self._coordinator.clock()
        offsets: dict[TopicPartition, CommittedOffset] = {}
        for o in request.offsets:
            tp = TopicPartition(o.topic, o.partition)
            if tp in offsets:
                raise InvalidArgument(f"partition {tp} is listed twice in offsets; list each partition once")
            offsets[tp] = CommittedOffset(o.offset, o.metadata, now)
        fence: dict[TopicPartition, int] = {}
        for o in request.if_committed:
            tp = TopicPartition(o.topic, o.partition)
            if tp in fence:
                raise InvalidArgument(f"partition {tp} is listed twice in if_committed; list each partition once")
            if o.offset < -1:
                raise InvalidArgument(f"if_committed offsets are -1 (none committed) or more, got {o.offset} for {tp}")
            fence[tp] = o.offset
        result = self._coordinator.produce_and_commit(
            request.group, offsets, fence, produce.topic, produce.partition, records_of(produce, now), stamp_of(produce)
        )
        return g.ProduceAndCommitResponse(
            produce=log_pb2.ProduceResponse(
                partitions=[
                    log_pb2.PartitionProduceResult(
                        partition=result.partition, base_offset=result.base_offset, record_count=result.record_count,
                        log_append_time_ms=result.append_time_ms, duplicate=result.duplicate,
                    )
                ]
            )
        )

    @translate_errors
    def FetchCommittedOffsets(
        self, request: groups_pb2.FetchCommittedOffsetsRequest, context: grpc.ServicerContext
    ) -> groups_pb2.FetchCommittedOffsetsResponse:
        found = self._coordinator.fetch_committed(request.group, request.topics)
        return g.FetchCommittedOffsetsResponse(offsets=[_offset_commit(tp, c) for tp, c in sorted(found.items())])

    # -- admin -------------------------------------------------------------------------------------

    @translate_errors
    def ListGroups(self, request: groups_pb2.ListGroupsRequest, context: grpc.ServicerContext) -> groups_pb2.ListGroupsResponse:
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {request.page_size}")
        size = min(request.page_size or _MAX_PAGE, _MAX_PAGE)
        after = decode_page_token("groups", request.page_token, "ListGroups", validate_group_name)
        page = [s for s in self._coordinator.list_groups() if s.name > after][: size + 1]
        more = len(page) > size
        page = page[:size]
        return g.ListGroupsResponse(
            groups=[g.GroupSummary(name=s.name, member_count=s.member_count, topics=s.topics) for s in page],
            next_page_token=encode_page_token("groups", page[-1].name) if more else "",
        )

    @translate_errors
    def DescribeGroup(self, request: groups_pb2.DescribeGroupRequest, context: grpc.ServicerContext) -> groups_pb2.DescribeGroupResponse:
        d = self._coordinator.describe_group(request.group)
        return g.DescribeGroupResponse(
            group=d.name,
            generation=d.generation,
            delivery_mode=_MODES_OUT.get(d.mode, g.DELIVERY_MODE_UNSPECIFIED),
            delivery_guarantee=_GUARANTEES_OUT.get(d.guarantee, g.DELIVERY_GUARANTEE_UNSPECIFIED),
            members=[
                g.GroupMember(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    peer=m.peer,
                    assignment=[g.TopicPartition(topic=tp.topic, partition=tp.partition) for tp in m.assignment],
                    in_flight_records=m.in_flight,
                    joined_ms=m.joined_ms,
                    last_seen_ms=m.last_seen_ms,
                )
                for m in d.members
            ],
            partitions=[
                g.GroupPartition(
                    topic=p.tp.topic,
                    partition=p.tp.partition,
                    committed_offset=p.committed,
                    log_end_offset=p.log_end_offset,
                    lag=p.lag,
                    member_id=p.owner,
                    in_flight_records=p.in_flight,
                )
                for p in d.partitions
            ],
        )

    @translate_errors
    def SeekGroup(self, request: groups_pb2.SeekGroupRequest, context: grpc.ServicerContext) -> groups_pb2.SeekGroupResponse:
        which = request.target.WhichOneof("target")
        if which is None:
            raise InvalidArgument("SeekGroup needs a target: offset_position, offset or timestamp_ms")
        if which == "offset_position":
            position = request.target.offset_position
            if position not in (g.OFFSET_POSITION_EARLIEST, g.OFFSET_POSITION_LATEST):
                raise InvalidArgument("target.offset_position must be OFFSET_POSITION_EARLIEST or OFFSET_POSITION_LATEST")
            target = SeekTarget(earliest=position == g.OFFSET_POSITION_EARLIEST, latest=position == g.OFFSET_POSITION_LATEST)
        elif which == "offset":
            target = SeekTarget(offset=request.target.offset)
        else:
            target = SeekTarget(timestamp_ms=request.target.timestamp_ms)
        moved = self._coordinator.seek(request.group, request.topic, target, request.partitions)
        now = self._coordinator.clock()
        return g.SeekGroupResponse(
            offsets=[_offset_commit(tp, CommittedOffset(o, "seek", now)) for tp, o in moved.items()]
        )

    @translate_errors
    def DeleteGroup(self, request: groups_pb2.DeleteGroupRequest, context: grpc.ServicerContext) -> groups_pb2.DeleteGroupResponse:
        self._coordinator.delete_group(request.group)
        return g.DeleteGroupResponse()

    # -- retries and dead letters ----------------------------------------------------------------------

    @translate_errors
    def SetRetryPolicy(self, request: groups_pb2.SetRetryPolicyRequest, context: grpc.ServicerContext) -> groups_pb2.SetRetryPolicyResponse:
        policy = policy_from_proto(request.policy) if request.HasField("policy") else None
        self._coordinator.set_retry_policy(request.group, request.topic, policy)
        return g.SetRetryPolicyResponse(
            retry_topics=[tier_topic(request.topic, request.group, d) for d in (policy.tier_delays() if policy else ())],
            dead_letter_topic=dlq_topic(request.topic, request.group) if policy else "",
        )

    @translate_errors
    def ListDeadLetters(self, request: groups_pb2.ListDeadLettersRequest, context: grpc.ServicerContext) -> groups_pb2.ListDeadLettersResponse:
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {request.page_size}")
        after = _decode_position(request.page_token)
        letters, more = self._coordinator.dead_letters.list(
            request.group, request.topic, _filter(request), after, min(request.page_size or 100, 1000)
        )
        out = []
        for d in letters:
            record = records_pb2.Record(timestamp_ms=d.record.timestamp, headers=[
                records_pb2.Header(name=n, value=v) for n, v in d.record.headers])
            if d.record.key is not None:
                record.key = d.record.key
            if d.record.value is not None:
                record.value = d.record.value
            prov = d.provenance
            letter = g.DeadLetter(partition=d.partition, offset=d.offset, record=record)
            if prov is not None:
                letter.origin_topic = prov.origin_topic
                letter.origin_partition = prov.origin_partition
                letter.origin_offset = prov.origin_offset
                letter.attempts = prov.attempt
                letter.first_failure_ms = prov.first_failure_ms
                letter.error = prov.error
                letter.dead_lettered_ms = prov.dead_lettered_ms
            out.append(letter)
        token = encode_page_token("deadletters", f"{more[0]}:{more[1]}") if more else ""
        return g.ListDeadLettersResponse(dead_letters=out, next_page_token=token)

    @translate_stream_errors
    def RedriveDeadLetters(
        self, request: groups_pb2.RedriveDeadLettersRequest, context: grpc.ServicerContext
    ) -> Iterator[groups_pb2.RedriveDeadLettersResponse]:
        rate = request.records_per_second or 1000
        progress = self._coordinator.dead_letters.redrive(
            request.group, request.topic, _filter(request), rate, cancelled=lambda: not context.is_active()
        )
        for done, total in progress:
            yield g.RedriveDeadLettersResponse(redriven=done, total=total)

    @translate_errors
    def PurgeDeadLetters(self, request: groups_pb2.PurgeDeadLettersRequest, context: grpc.ServicerContext) -> groups_pb2.PurgeDeadLettersResponse:
        return g.PurgeDeadLettersResponse(purged=self._coordinator.dead_letters.purge(request.group, request.topic))

    # -- registration ---------------------------------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:
        def unary(method, req_cls, resp_cls):  # noqa: ANN001, ANN202
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=safe_deserializer(req_cls), response_serializer=resp_cls.SerializeToString
            )

        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Consume": grpc.stream_stream_rpc_method_handler(
                    self.Consume,
                    request_deserializer=safe_deserializer(g.ConsumeRequest),
                    response_serializer=wire.encode_consume_response,
                ),
                "CommitOffsets": unary(self.CommitOffsets, g.CommitOffsetsRequest, g.CommitOffsetsResponse),
                "ProduceAndCommit": unary(self.ProduceAndCommit, g.ProduceAndCommitRequest, g.ProduceAndCommitResponse),
                "FetchCommittedOffsets": unary(
                    self.FetchCommittedOffsets, g.FetchCommittedOffsetsRequest, g.FetchCommittedOffsetsResponse
                ),
                "ListGroups": unary(self.ListGroups, g.ListGroupsRequest, g.ListGroupsResponse),
                "DescribeGroup": unary(self.DescribeGroup, g.DescribeGroupRequest, g.DescribeGroupResponse),
                "SeekGroup": unary(self.SeekGroup, g.SeekGroupRequest, g.SeekGroupResponse),
                "DeleteGroup": unary(self.DeleteGroup, g.DeleteGroupRequest, g.DeleteGroupResponse),
                "SetRetryPolicy": unary(self.SetRetryPolicy, g.SetRetryPolicyRequest, g.SetRetryPolicyResponse),
                "ListDeadLetters": unary(self.ListDeadLetters, g.ListDeadLettersRequest, g.ListDeadLettersResponse),
                "RedriveDeadLetters": grpc.unary_stream_rpc_method_handler(
                    self.RedriveDeadLetters,
                    request_deserializer=safe_deserializer(g.RedriveDeadLettersRequest),
                    response_serializer=g.RedriveDeadLettersResponse.SerializeToString,
                ),
                "PurgeDeadLetters": unary(self.PurgeDeadLetters, g.PurgeDeadLettersRequest, g.PurgeDeadLettersResponse),
            },
        )
