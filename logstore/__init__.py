"""logstore: a Kafka-style partitioned commit log served over gRPC."""

__version__ = "0.1.0"
