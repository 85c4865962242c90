"""Authentication: bearer tokens and the principals they stand for.

A client proves who it is with gRPC metadata ``authorization: Bearer
<token>``.  The broker keeps no tokens, only their SHA-256 (lowercase hex)
in the ``[principals.<name>]`` tables of the security file, each with the
principal's grants (``logstore.server.authz``)::

    [principals.orders-service]
    token_sha256 = "4f1c..."                 # or a list, to rotate tokens
    topics = { "orders" = ["produce"] }
    groups = { "billing" = ["consume"] }

``logstore auth new-token --principal NAME`` mints a token (32 random bytes
from ``secrets``, URL-safe base64, prefixed ``lst_`` so secret scanners can
spot it) and prints the table to paste.  A plain unsalted SHA-256 is enough
for such tokens: they have 256 bits of entropy, so the hash cannot be
reversed by guessing, and a stolen security file does not reveal a token.
Do not use hand-made, guessable tokens with this scheme.

What this does NOT do: tokens do not expire (remove the hash and restart
the broker to revoke one; the file is read at startup only), there is no
per-token identity beyond its principal, and a token sent without TLS can
be read off the network.  A TLS client certificate authenticates the
connection, not a principal.  Tokens are never logged; neither are they
compared in constant time, which does not matter here because what is
looked up is their hash, which an attacker cannot steer.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from logstore.errors import InvalidArgument, Unauthenticated
from logstore.server.authz import Grants

_LOGGER = logging.getLogger(__name__)

__all__ = [
    "ANONYMOUS",
    "TOKEN_PREFIX",
    "Principal",
    "Authenticator",
    "hash_token",
    "new_token",
    "principal_config",
]

ANONYMOUS = "anonymous"
"""The principal of every call when the broker checks no tokens."""
TOKEN_PREFIX = "lst_"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_AUTHORIZATION = "authorization"


def hash_token(token: str) -> str:
    """The SHA-256 of ``token`` (UTF-8) as lowercase hex: what the security file stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token: ``lst_`` and 43 URL-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def principal_config(name: str, token_sha256: str) -> str:
    """The TOML table for a new principal, permissions left for the operator to fill in."""
    return (
        f"[principals.{_toml_key(name)}]\n"
        f'token_sha256 = "{token_sha256}"\n'
        f"topics = {{}}   # e.g. {{ \"orders\" = [\"produce\"], \"orders.*\" = [\"consume\"] }}\n"
        f"groups = {{}}   # e.g. {{ \"billing\" = [\"consume\"] }}\n"
    )


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


def check_principal_name(name: str) -> str:
    """``name`` if it is a valid principal name, else InvalidArgument."""
    if not isinstance(name, str) or not _PRINCIPAL_NAME.match(name):
        raise InvalidArgument(
            f"principal name {name!r} must be 1-128 characters from [A-Za-z0-9._@-]"
        )
    return name


@dataclass(frozen=True, slots=True)
class Principal:
    """A named identity, its token hashes and its grants."""

    name: str
    token_hashes: tuple[str, ...]
    grants: Grants = field(default_factory=Grants)

    @classmethod
    def from_toml(cls, name: str, table: Mapping[str, Any]) -> "Principal":
        where = f"[principals.{name}]"
        check_principal_name(name)
        if not isinstance(table, dict):
            raise InvalidArgument(f"{where} must be a table")
        unknown = sorted(set(table) - {"token_sha256", "topics", "groups"})
        if unknown:
            raise InvalidArgument(f"{where}: unknown key(s) {unknown}; known: token_sha256, topics, groups")
        hashes = table.get("token_sha256", [])
        if isinstance(hashes, str):
            hashes = [hashes]
        if not isinstance(hashes, list) or not hashes:
            raise InvalidArgument(
                f"{where} needs token_sha256: the SHA-256 hex of its token (`logstore auth new-token` prints it)"
            )
        for h in hashes:
            if not isinstance(h, str) or not _SHA256_HEX.match(h):
                raise InvalidArgument(
                    f"{where}: token_sha256 entries are 64 lowercase hex digits (a SHA-256), got {h!r}; "
                    "put the hash in the file, never the token"
                )
        return cls(name, tuple(hashes), Grants.from_toml(where, table.get("topics"), table.get("groups")))


class Authenticator:
    """Finds the principal of a call from its ``authorization`` metadata."""

    __slots__ = ("_by_hash", "principals")

    def __init__(self, principals: Iterable[Principal]) -> None:
        self.principals: dict[str, Principal] = {}
        self._by_hash: dict[str, Principal] = {}
        for p in principals:
            if p.name in self.principals:
                raise InvalidArgument(f"principal {p.name!r} is defined twice")
            self.principals[p.name] = p
            for h in p.token_hashes:
                other = self._by_hash.get(h)
                if other is not None:
                    raise InvalidArgument(
                        f"principals {other.name!r} and {p.name!r} share a token hash; each token names one principal"
                    )
                self._by_hash[h] = p

    @classmethod
    def from_toml(cls, table: Mapping[str, Any]) -> "Authenticator":
        """From the ``[principals]`` table of the security file."""
        if not isinstance(table, dict):
            raise InvalidArgument("[principals] must be a table of [principals.NAME] tables")
        return cls(Principal.from_toml(name, value) for name, value in table.items())

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None) -> Principal:
        """The principal whose token the call carries; Unauthenticated if none does."""
        header = None
        for key, value in metadata or ():
            if key == _AUTHORIZATION:
                header = value
                break
        if header is None:
            raise Unauthenticated(
                "this broker requires a token: send the metadata `authorization: Bearer <token>` "
                "(logstore clients: token=..., the CLI: $LOGSTORE_TOKEN or --token-file)"
            )
        if isinstance(header, bytes):
            header = header.decode("utf-8", "replace")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be `Bearer <token>`")
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            raise Unauthenticated("the token is not valid on this broker (unknown or revoked)")
        return principal
