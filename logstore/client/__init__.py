"""The logstore client library: ``Producer``, ``Reader``, ``Consumer``, ``Admin`` and ``AtomicWriter``.

Everything here talks to a broker over gRPC with the stubs generated from
``proto/logstore/v1``; errors are the classes of ``logstore.errors``.
"""

from logstore.client._channel import ClientTLS
from logstore.client.admin import Admin
from logstore.client.atomic import AtomicWrite, AtomicWriter
from logstore.client.consumer import Consumer, ConsumerMessage, DeliveryBatch
from logstore.client.messages import (
    DeadLetter,
    GroupDescription,
    GroupMember,
    GroupPartition,
    GroupSummary,
    Message,
    MessageBatch,
    OffsetCommit,
    PartitionInfo,
    PartitionOffsets,
    RecordMetadata,
    RetryPolicy,
    TopicConfig,
    TopicDescription,
    TopicInfo,
)
from logstore.client.producer import Producer
from logstore.client.reader import Reader, fetch

__all__ = [
    "Admin",
    "AtomicWriter",
    "AtomicWrite",
    "ClientTLS",
    "Producer",
    "Reader",
    "Consumer",
    "fetch",
    "Message",
    "MessageBatch",
    "ConsumerMessage",
    "DeliveryBatch",
    "OffsetCommit",
    "GroupSummary",
    "GroupMember",
    "GroupPartition",
    "GroupDescription",
    "RetryPolicy",
    "DeadLetter",
    "PartitionInfo",
    "PartitionOffsets",
    "RecordMetadata",
    "TopicConfig",
    "TopicDescription",
    "TopicInfo",
]
