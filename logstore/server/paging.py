"""Opaque page tokens for the List RPCs: each names the last item of the previous page.

A token is ``base64url(kind + ":after:" + name)``.  Naming the last item (not
an index) keeps paging stable while items are created and deleted between
calls.  Tokens are opaque to clients but not secret or signed: a forged one
can only move where a listing starts.
"""

from __future__ import annotations

import base64
from typing import Callable

from logstore.errors import InvalidArgument, LogstoreError

__all__ = ["encode_page_token", "decode_page_token"]


def encode_page_token(kind: str, last_name: str) -> str:
    """The token for the page after ``last_name`` in a listing of ``kind``."""
    return base64.urlsafe_b64encode(f"{kind}:after:".encode("ascii") + last_name.encode("utf-8")).decode("ascii")


def decode_page_token(kind: str, token: str, rpc: str, validate: Callable[[str], object]) -> str:
    """The name ``token`` points after ("" for the first page); INVALID_ARGUMENT if it
    was not made by ``encode_page_token(kind, ...)`` for a name ``validate`` accepts."""
    if not token:
        return ""
    prefix = f"{kind}:after:".encode("ascii")
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        if not raw.startswith(prefix):
            raise ValueError
        name = raw[len(prefix) :].decode("utf-8")
        validate(name)
        return name
    except (ValueError, UnicodeError, LogstoreError):
        raise InvalidArgument(
            f"page_token was not returned by {rpc}; pass the previous response's "
            "next_page_token, or an empty token for the first page"
        ) from None
