"""Generated code for the proto package ``logstore.v1`` (see proto/logstore/v1)."""
