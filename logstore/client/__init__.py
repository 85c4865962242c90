"""The logstore client library: ``Producer``, ``Reader`` and ``Admin``.

Everything here talks to a broker over gRPC with the stubs generated from
``proto/logstore/v1``; errors are the classes of ``logstore.errors``.
"""

from logstore.client.admin import Admin
from logstore.client.messages import (
    Message,
    MessageBatch,
    PartitionInfo,
    PartitionOffsets,
    RecordMetadata,
    TopicConfig,
    TopicDescription,
    TopicInfo,
)
from logstore.client.producer import Producer
from logstore.client.reader import Reader, fetch

__all__ = [
    "Admin",
    "Producer",
    "Reader",
    "fetch",
    "Message",
    "MessageBatch",
    "PartitionInfo",
    "PartitionOffsets",
    "RecordMetadata",
    "TopicConfig",
    "TopicDescription",
    "TopicInfo",
]
