from logstore._proto.logstore.v1 import log_pb2 as _log_pb2
from logstore._proto.logstore.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_MODE_UNSPECIFIED: _ClassVar[DeliveryMode]
    DELIVERY_MODE_PARTITION_ORDERED: _ClassVar[DeliveryMode]
    DELIVERY_MODE_KEY_ORDERED: _ClassVar[DeliveryMode]
    DELIVERY_MODE_UNORDERED: _ClassVar[DeliveryMode]

class DeliveryGuarantee(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_GUARANTEE_UNSPECIFIED: _ClassVar[DeliveryGuarantee]
    DELIVERY_GUARANTEE_AT_LEAST_ONCE: _ClassVar[DeliveryGuarantee]
    DELIVERY_GUARANTEE_AT_MOST_ONCE: _ClassVar[DeliveryGuarantee]

class OffsetPosition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFFSET_POSITION_UNSPECIFIED: _ClassVar[OffsetPosition]
    OFFSET_POSITION_EARLIEST: _ClassVar[OffsetPosition]
    OFFSET_POSITION_LATEST: _ClassVar[OffsetPosition]
DELIVERY_MODE_UNSPECIFIED: DeliveryMode
DELIVERY_MODE_PARTITION_ORDERED: DeliveryMode
DELIVERY_MODE_KEY_ORDERED: DeliveryMode
DELIVERY_MODE_UNORDERED: DeliveryMode
DELIVERY_GUARANTEE_UNSPECIFIED: DeliveryGuarantee
DELIVERY_GUARANTEE_AT_LEAST_ONCE: DeliveryGuarantee
DELIVERY_GUARANTEE_AT_MOST_ONCE: DeliveryGuarantee
OFFSET_POSITION_UNSPECIFIED: OffsetPosition
OFFSET_POSITION_EARLIEST: OffsetPosition
OFFSET_POSITION_LATEST: OffsetPosition

class StartPosition(_message.Message):
    __slots__ = ("offset_position", "timestamp_ms")
    OFFSET_POSITION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    offset_position: OffsetPosition
    timestamp_ms: int
    def __init__(self, offset_position: _Optional[_Union[OffsetPosition, str]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class Join(_message.Message):
    __slots__ = ("group", "topics", "max_in_flight_records", "ack_deadline_ms", "delivery_mode", "start_position", "session_timeout_ms", "delivery_guarantee", "client_id", "retry_policies")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_MODE_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    SESSION_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICIES_FIELD_NUMBER: _ClassVar[int]
    group: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    max_in_flight_records: int
    ack_deadline_ms: int
    delivery_mode: DeliveryMode
    start_position: StartPosition
    session_timeout_ms: int
    delivery_guarantee: DeliveryGuarantee
    client_id: str
    retry_policies: _containers.RepeatedCompositeFieldContainer[TopicRetryPolicy]
    def __init__(self, group: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., max_in_flight_records: _Optional[int] = ..., ack_deadline_ms: _Optional[int] = ..., delivery_mode: _Optional[_Union[DeliveryMode, str]] = ..., start_position: _Optional[_Union[StartPosition, _Mapping]] = ..., session_timeout_ms: _Optional[int] = ..., delivery_guarantee: _Optional[_Union[DeliveryGuarantee, str]] = ..., client_id: _Optional[str] = ..., retry_policies: _Optional[_Iterable[_Union[TopicRetryPolicy, _Mapping]]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "delays_ms", "initial_delay_ms", "multiplier", "max_delay_ms", "jitter")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DELAYS_MS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    delays_ms: _containers.RepeatedScalarFieldContainer[int]
    initial_delay_ms: int
    multiplier: float
    max_delay_ms: int
    jitter: float
    def __init__(self, max_attempts: _Optional[int] = ..., delays_ms: _Optional[_Iterable[int]] = ..., initial_delay_ms: _Optional[int] = ..., multiplier: _Optional[float] = ..., max_delay_ms: _Optional[int] = ..., jitter: _Optional[float] = ...) -> None: ...

class TopicRetryPolicy(_message.Message):
    __slots__ = ("topic", "policy")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    topic: str
    policy: RetryPolicy
    def __init__(self, topic: _Optional[str] = ..., policy: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class DeliveryIdRange(_message.Message):
    __slots__ = ("first_id", "end_id")
    FIRST_ID_FIELD_NUMBER: _ClassVar[int]
    END_ID_FIELD_NUMBER: _ClassVar[int]
    first_id: int
    end_id: int
    def __init__(self, first_id: _Optional[int] = ..., end_id: _Optional[int] = ...) -> None: ...

class DeliveryIds(_message.Message):
    __slots__ = ("ids", "ranges")
    IDS_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    ranges: _containers.RepeatedCompositeFieldContainer[DeliveryIdRange]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., ranges: _Optional[_Iterable[_Union[DeliveryIdRange, _Mapping]]] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("ids", "reason", "terminal")
    IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    ids: DeliveryIds
    reason: str
    terminal: bool
    def __init__(self, ids: _Optional[_Union[DeliveryIds, _Mapping]] = ..., reason: _Optional[str] = ..., terminal: _Optional[bool] = ...) -> None: ...

class ExtendDeadline(_message.Message):
    __slots__ = ("ids", "extension_ms")
    IDS_FIELD_NUMBER: _ClassVar[int]
    EXTENSION_MS_FIELD_NUMBER: _ClassVar[int]
    ids: DeliveryIds
    extension_ms: int
    def __init__(self, ids: _Optional[_Union[DeliveryIds, _Mapping]] = ..., extension_ms: _Optional[int] = ...) -> None: ...

class ConsumeRequest(_message.Message):
    __slots__ = ("join", "ack", "nack", "extend_deadline", "leave")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    EXTEND_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    join: Join
    ack: DeliveryIds
    nack: Nack
    extend_deadline: ExtendDeadline
    leave: bool
    def __init__(self, join: _Optional[_Union[Join, _Mapping]] = ..., ack: _Optional[_Union[DeliveryIds, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., extend_deadline: _Optional[_Union[ExtendDeadline, _Mapping]] = ..., leave: _Optional[bool] = ...) -> None: ...

class TopicPartition(_message.Message):
    __slots__ = ("topic", "partition")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("records", "topic", "partition", "first_delivery_id", "base_offset", "offsets", "attempt", "deadline_ms", "log_append_time_ms")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FIRST_DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    LOG_APPEND_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2.Record]
    topic: str
    partition: int
    first_delivery_id: int
    base_offset: int
    offsets: _containers.RepeatedScalarFieldContainer[int]
    attempt: int
    deadline_ms: int
    log_append_time_ms: int
    def __init__(self, records: _Optional[_Iterable[_Union[_records_pb2.Record, _Mapping]]] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., first_delivery_id: _Optional[int] = ..., base_offset: _Optional[int] = ..., offsets: _Optional[_Iterable[int]] = ..., attempt: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., log_append_time_ms: _Optional[int] = ...) -> None: ...

class CommittedPosition(_message.Message):
    __slots__ = ("topic", "partition", "offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ConsumeResponse(_message.Message):
    __slots__ = ("member_id", "generation", "assignment", "deliveries", "stale", "committed", "errors")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    generation: int
    assignment: _containers.RepeatedCompositeFieldContainer[TopicPartition]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    stale: DeliveryIds
    committed: _containers.RepeatedCompositeFieldContainer[CommittedPosition]
    errors: _containers.RepeatedCompositeFieldContainer[_log_pb2.Status]
    def __init__(self, member_id: _Optional[str] = ..., generation: _Optional[int] = ..., assignment: _Optional[_Iterable[_Union[TopicPartition, _Mapping]]] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., stale: _Optional[_Union[DeliveryIds, _Mapping]] = ..., committed: _Optional[_Iterable[_Union[CommittedPosition, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[_log_pb2.Status, _Mapping]]] = ...) -> None: ...

class OffsetCommit(_message.Message):
    __slots__ = ("topic", "partition", "offset", "metadata", "commit_time_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    metadata: str
    commit_time_ms: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., metadata: _Optional[str] = ..., commit_time_ms: _Optional[int] = ...) -> None: ...

class CommitOffsetsRequest(_message.Message):
    __slots__ = ("group", "offsets")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    group: str
    offsets: _containers.RepeatedCompositeFieldContainer[OffsetCommit]
    def __init__(self, group: _Optional[str] = ..., offsets: _Optional[_Iterable[_Union[OffsetCommit, _Mapping]]] = ...) -> None: ...

class CommitOffsetsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProduceAndCommitRequest(_message.Message):
    __slots__ = ("group", "offsets", "produce", "if_committed")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    PRODUCE_FIELD_NUMBER: _ClassVar[int]
    IF_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    group: str
    offsets: _containers.RepeatedCompositeFieldContainer[OffsetCommit]
    produce: _log_pb2.ProduceRequest
    if_committed: _containers.RepeatedCompositeFieldContainer[OffsetCommit]
    def __init__(self, group: _Optional[str] = ..., offsets: _Optional[_Iterable[_Union[OffsetCommit, _Mapping]]] = ..., produce: _Optional[_Union[_log_pb2.ProduceRequest, _Mapping]] = ..., if_committed: _Optional[_Iterable[_Union[OffsetCommit, _Mapping]]] = ...) -> None: ...

class ProduceAndCommitResponse(_message.Message):
    __slots__ = ("produce",)
    PRODUCE_FIELD_NUMBER: _ClassVar[int]
    produce: _log_pb2.ProduceResponse
    def __init__(self, produce: _Optional[_Union[_log_pb2.ProduceResponse, _Mapping]] = ...) -> None: ...

class FetchCommittedOffsetsRequest(_message.Message):
    __slots__ = ("group", "topics")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    group: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchCommittedOffsetsResponse(_message.Message):
    __slots__ = ("offsets",)
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.RepeatedCompositeFieldContainer[OffsetCommit]
    def __init__(self, offsets: _Optional[_Iterable[_Union[OffsetCommit, _Mapping]]] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GroupSummary(_message.Message):
    __slots__ = ("name", "member_count", "topics")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    name: str
    member_count: int
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., member_count: _Optional[int] = ..., topics: _Optional[_Iterable[str]] = ...) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups", "next_page_token")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupSummary]
    next_page_token: str
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DescribeGroupRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class GroupMember(_message.Message):
    __slots__ = ("member_id", "client_id", "peer", "assignment", "in_flight_records", "joined_ms", "last_seen_ms")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    JOINED_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    client_id: str
    peer: str
    assignment: _containers.RepeatedCompositeFieldContainer[TopicPartition]
    in_flight_records: int
    joined_ms: int
    last_seen_ms: int
    def __init__(self, member_id: _Optional[str] = ..., client_id: _Optional[str] = ..., peer: _Optional[str] = ..., assignment: _Optional[_Iterable[_Union[TopicPartition, _Mapping]]] = ..., in_flight_records: _Optional[int] = ..., joined_ms: _Optional[int] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

class GroupPartition(_message.Message):
    __slots__ = ("topic", "partition", "committed_offset", "log_end_offset", "lag", "member_id", "in_flight_records")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int
    lag: int
    member_id: str
    in_flight_records: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., committed_offset: _Optional[int] = ..., log_end_offset: _Optional[int] = ..., lag: _Optional[int] = ..., member_id: _Optional[str] = ..., in_flight_records: _Optional[int] = ...) -> None: ...

class DescribeGroupResponse(_message.Message):
    __slots__ = ("group", "generation", "delivery_mode", "delivery_guarantee", "members", "partitions")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_MODE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_GUARANTEE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    group: str
    generation: int
    delivery_mode: DeliveryMode
    delivery_guarantee: DeliveryGuarantee
    members: _containers.RepeatedCompositeFieldContainer[GroupMember]
    partitions: _containers.RepeatedCompositeFieldContainer[GroupPartition]
    def __init__(self, group: _Optional[str] = ..., generation: _Optional[int] = ..., delivery_mode: _Optional[_Union[DeliveryMode, str]] = ..., delivery_guarantee: _Optional[_Union[DeliveryGuarantee, str]] = ..., members: _Optional[_Iterable[_Union[GroupMember, _Mapping]]] = ..., partitions: _Optional[_Iterable[_Union[GroupPartition, _Mapping]]] = ...) -> None: ...

class SeekTarget(_message.Message):
    __slots__ = ("offset_position", "offset", "timestamp_ms")
    OFFSET_POSITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    offset_position: OffsetPosition
    offset: int
    timestamp_ms: int
    def __init__(self, offset_position: _Optional[_Union[OffsetPosition, str]] = ..., offset: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class SeekGroupRequest(_message.Message):
    __slots__ = ("group", "topic", "partitions", "target")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    partitions: _containers.RepeatedScalarFieldContainer[int]
    target: SeekTarget
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., partitions: _Optional[_Iterable[int]] = ..., target: _Optional[_Union[SeekTarget, _Mapping]] = ...) -> None: ...

class SeekGroupResponse(_message.Message):
    __slots__ = ("offsets",)
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.RepeatedCompositeFieldContainer[OffsetCommit]
    def __init__(self, offsets: _Optional[_Iterable[_Union[OffsetCommit, _Mapping]]] = ...) -> None: ...

class DeleteGroupRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class DeleteGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetRetryPolicyRequest(_message.Message):
    __slots__ = ("group", "topic", "policy")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    policy: RetryPolicy
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., policy: _Optional[_Union[RetryPolicy, _Mapping]] = ...) -> None: ...

class SetRetryPolicyResponse(_message.Message):
    __slots__ = ("retry_topics", "dead_letter_topic")
    RETRY_TOPICS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_TOPIC_FIELD_NUMBER: _ClassVar[int]
    retry_topics: _containers.RepeatedScalarFieldContainer[str]
    dead_letter_topic: str
    def __init__(self, retry_topics: _Optional[_Iterable[str]] = ..., dead_letter_topic: _Optional[str] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("group", "topic", "key", "since_ms", "until_ms", "page_size", "page_token")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    key: bytes
    since_ms: int
    until_ms: int
    page_size: int
    page_token: str
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., key: _Optional[bytes] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("partition", "offset", "record", "origin_topic", "origin_partition", "origin_offset", "attempts", "first_failure_ms", "error", "dead_lettered_ms")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_TOPIC_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_PARTITION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_OFFSET_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_FAILURE_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_MS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    offset: int
    record: _records_pb2.Record
    origin_topic: str
    origin_partition: int
    origin_offset: int
    attempts: int
    first_failure_ms: int
    error: str
    dead_lettered_ms: int
    def __init__(self, partition: _Optional[int] = ..., offset: _Optional[int] = ..., record: _Optional[_Union[_records_pb2.Record, _Mapping]] = ..., origin_topic: _Optional[str] = ..., origin_partition: _Optional[int] = ..., origin_offset: _Optional[int] = ..., attempts: _Optional[int] = ..., first_failure_ms: _Optional[int] = ..., error: _Optional[str] = ..., dead_lettered_ms: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RedriveDeadLettersRequest(_message.Message):
    __slots__ = ("group", "topic", "records_per_second", "key", "since_ms", "until_ms")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    records_per_second: int
    key: bytes
    since_ms: int
    until_ms: int
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ..., records_per_second: _Optional[int] = ..., key: _Optional[bytes] = ..., since_ms: _Optional[int] = ..., until_ms: _Optional[int] = ...) -> None: ...

class RedriveDeadLettersResponse(_message.Message):
    __slots__ = ("redriven", "total")
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    redriven: int
    total: int
    def __init__(self, redriven: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class PurgeDeadLettersRequest(_message.Message):
    __slots__ = ("group", "topic")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    group: str
    topic: str
    def __init__(self, group: _Optional[str] = ..., topic: _Optional[str] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
