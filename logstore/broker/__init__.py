"""The broker: topics, partitions and their rules, above storage and below gRPC."""
