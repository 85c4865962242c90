"""Generated code for the proto package ``logstore``."""
