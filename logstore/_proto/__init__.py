"""Generated protobuf and gRPC modules of logstore.

Everything under this package is written by tools/gen-proto from
proto/logstore/v1/*.proto; do not edit it, rerun the script.  Import as
``from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc``.
"""
