"""The gRPC layer: thin servicers that translate proto messages to broker calls."""
