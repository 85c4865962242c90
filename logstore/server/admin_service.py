"""The ``logstore.v1.Admin`` service: topic management."""

from __future__ import annotations

import logging

import grpc

from logstore._proto.logstore.v1 import admin_pb2
from logstore.broker.broker import Broker
from logstore.broker.config import TopicConfig
from logstore.broker.topic import TopicMetadata
from logstore.broker.names import validate_topic_name
from logstore.errors import InvalidArgument
from logstore.server.paging import decode_page_token, encode_page_token
from logstore.server.status import safe_deserializer, translate_errors
from logstore.storage.config import Durability

_LOGGER = logging.getLogger(__name__)

__all__ = ["AdminService"]

SERVICE_NAME = "logstore.v1.Admin"

_DURABILITY_IN = {
    admin_pb2.DURABILITY_ALWAYS: Durability.ALWAYS,
    admin_pb2.DURABILITY_INTERVAL: Durability.INTERVAL,
    admin_pb2.DURABILITY_OS: Durability.OS,
}
_DURABILITY_OUT = {v: k for k, v in _DURABILITY_IN.items()}
_MAX_PAGE = 1000


def topic_config_from_proto(defaults: TopicConfig, msg: admin_pb2.TopicConfig) -> TopicConfig:
    """Apply the fields a client set on top of the broker's defaults."""
    overrides: dict[str, object] = {}
    if msg.HasField("durability_interval_ms") and msg.durability_interval_ms < 1:
        raise InvalidArgument(
            f"durability_interval_ms must be at least 1, got {msg.durability_interval_ms}"
        )
    for proto_name, name in (
        ("retention_ms", "retention_ms"),
        ("retention_bytes", "retention_bytes"),
        ("segment_bytes", "segment_bytes"),
        ("durability_interval_ms", "flush_interval_ms"),
        ("max_record_bytes", "max_record_bytes"),
        ("max_batch_bytes", "max_batch_bytes"),
    ):
        if msg.HasField(proto_name):
            overrides[name] = getattr(msg, proto_name)
    if msg.durability != admin_pb2.DURABILITY_UNSPECIFIED:
        if msg.durability not in _DURABILITY_IN:
            raise InvalidArgument(f"durability={msg.durability} is not a known Durability value")
        overrides["durability"] = _DURABILITY_IN[msg.durability]
    return defaults.with_overrides(**overrides)


def topic_to_proto(metadata: TopicMetadata) -> admin_pb2.Topic:
    c = metadata.config
    return admin_pb2.Topic(
        name=metadata.name,
        partition_count=metadata.partition_count,
        config=admin_pb2.TopicConfig(
            retention_ms=c.retention_ms,
            retention_bytes=c.retention_bytes,
            segment_bytes=c.segment_bytes,
            durability=_DURABILITY_OUT[c.durability],
            durability_interval_ms=c.flush_interval_ms,
            max_record_bytes=c.max_record_bytes,
            max_batch_bytes=c.max_batch_bytes,
        ),
    )


def _encode_page_token(last_name: str) -> str:
    return encode_page_token("topics", last_name)


def _decode_page_token(token: str) -> str:
    """The topic name a page token points after ("" for the first page)."""
    return decode_page_token(
        "topics", token, "ListTopics", lambda name: validate_topic_name(name, allow_internal=True)
    )


class AdminService:
    """Handlers of the Admin service, bound to one broker."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    @translate_errors
    def CreateTopic(self, request: admin_pb2.CreateTopicRequest, context: grpc.ServicerContext) -> admin_pb2.CreateTopicResponse:
        config = topic_config_from_proto(self._broker.config.topic_defaults, request.config)
        metadata = self._broker.create_topic(request.topic, request.partition_count, config)
        return admin_pb2.CreateTopicResponse(topic=topic_to_proto(metadata))

    @translate_errors
    def DeleteTopic(self, request: admin_pb2.DeleteTopicRequest, context: grpc.ServicerContext) -> admin_pb2.DeleteTopicResponse:
        self._broker.delete_topic(request.topic)
        return admin_pb2.DeleteTopicResponse()

    @translate_errors
    def ListTopics(self, request: admin_pb2.ListTopicsRequest, context: grpc.ServicerContext) -> admin_pb2.ListTopicsResponse:
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {request.page_size}")
        size = min(request.page_size or _MAX_PAGE, _MAX_PAGE)
        after = _decode_page_token(request.page_token)
        topics = self._broker.list_topics(include_internal=request.include_internal)
        # The token names the last topic of the previous page, so paging is
        # stable while topics are created and deleted between calls.
        page = [t for t in topics if t.name > after][: size + 1]
        more = len(page) > size
        page = page[:size]
        return admin_pb2.ListTopicsResponse(
            topics=[topic_to_proto(t) for t in page],
            next_page_token=_encode_page_token(page[-1].name) if more else "",
        )

    @translate_errors
    def DescribeTopic(self, request: admin_pb2.DescribeTopicRequest, context: grpc.ServicerContext) -> admin_pb2.DescribeTopicResponse:
        metadata, partitions = self._broker.describe_topic(request.topic)
        return admin_pb2.DescribeTopicResponse(
            topic=topic_to_proto(metadata),
            partitions=[
                admin_pb2.PartitionDescription(
                    partition=p.partition,
                    log_start_offset=p.log_start_offset,
                    log_end_offset=p.log_end_offset,
                    size_bytes=p.size_bytes,
                    segment_count=p.segment_count,
                )
                for p in partitions
            ],
        )

    @translate_errors
    def CreatePartitions(
        self, request: admin_pb2.CreatePartitionsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreatePartitionsResponse:
        metadata = self._broker.create_partitions(request.topic, request.partition_count)
        return admin_pb2.CreatePartitionsResponse(topic=topic_to_proto(metadata))

    def generic_handler(self) -> grpc.GenericRpcHandler:
        def unary(method, req_cls, resp_cls):  # noqa: ANN001, ANN202
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=safe_deserializer(req_cls), response_serializer=resp_cls.SerializeToString
            )

        a = admin_pb2
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "CreateTopic": unary(self.CreateTopic, a.CreateTopicRequest, a.CreateTopicResponse),
                "DeleteTopic": unary(self.DeleteTopic, a.DeleteTopicRequest, a.DeleteTopicResponse),
                "ListTopics": unary(self.ListTopics, a.ListTopicsRequest, a.ListTopicsResponse),
                "DescribeTopic": unary(self.DescribeTopic, a.DescribeTopicRequest, a.DescribeTopicResponse),
                "CreatePartitions": unary(self.CreatePartitions, a.CreatePartitionsRequest, a.CreatePartitionsResponse),
            },
        )
