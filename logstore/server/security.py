"""The security file: one TOML file (``logstore serve --security-config FILE``)
with up to three sections, each parsed by the module of its concept:

- ``[limits]`` (``logstore.server.limits.Limits``): request size, records
  per request, streams per connection;
- ``[quotas]`` (``logstore.server.limits.ProduceQuotas``): produce bytes per
  second, per principal;
- ``[principals.NAME]`` (``logstore.server.auth``): token hashes and grants.
  The presence of a ``principals`` table turns authentication on: from then
  on every call but the health checks needs a valid token.

Without a file (or with an empty one) the broker checks no tokens, applies
the default limits and no quota.  Unknown sections and keys are errors, so
a typo cannot silently switch protection off.

What this does NOT do: reload the file (restart the broker), or hold TLS
settings (those are command-line options, ``logstore.server.tls``).
"""

from __future__ import annotations

import ipaddress
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from logstore.errors import InvalidArgument
from logstore.server.auth import Authenticator
from logstore.server.limits import Limits, ProduceQuotas

_LOGGER = logging.getLogger(__name__)

__all__ = ["SecurityConfig", "exposure_warning", "is_loopback"]


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Authentication (None: off), limits and produce quotas of one broker."""

    auth: Authenticator | None = None
    limits: Limits = field(default_factory=Limits)
    quotas: ProduceQuotas = field(default_factory=ProduceQuotas)

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> "SecurityConfig":
        unknown = sorted(set(data) - {"limits", "quotas", "principals"})
        if unknown:
            raise InvalidArgument(f"unknown section(s) {unknown}; known: [limits], [quotas], [principals.NAME]")
        for name in ("limits", "quotas"):
            if not isinstance(data.get(name, {}), dict):
                raise InvalidArgument(f"[{name}] must be a table")
        return cls(
            Authenticator.from_toml(data["principals"]) if "principals" in data else None,
            Limits.from_toml(data.get("limits", {})),
            ProduceQuotas.from_toml(data.get("quotas", {})),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "SecurityConfig":
        """Read and check the file; InvalidArgument naming the file and the problem."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise InvalidArgument(f"cannot read security config {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise InvalidArgument(f"security config {path} is not valid TOML: {exc}") from None
        try:
            return cls.from_toml(data)
        except InvalidArgument as exc:
            raise InvalidArgument(f"security config {path}: {exc.message}") from None

    @property
    def needs_interceptor(self) -> bool:
        """False when nothing is checked per call (no auth, no record limit, no quota)."""
        return self.auth is not None or self.limits.max_records_per_request is not None or self.quotas.any


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(address: str, host: str, *, tls: bool, mutual_tls: bool = False, auth: bool) -> str | None:
    """The startup warning for serving a non-loopback ``host`` without TLS or without tokens, or None."""
    if is_loopback(host) or (tls and auth):
        return None
    if not tls and not auth:
        return (
            f"listening on {address} without TLS or authentication: anyone who can reach this address "
            "can read and write every topic (see docs/security.md)"
        )
    if not tls:
        return (
            f"listening on {address} without TLS: tokens and records cross the network in clear text "
            "(add --tls-cert and --tls-key)"
        )
    who = "any client with a certificate from the client CA" if mutual_tls else "anyone who can reach this address"
    return (
        f"listening on {address} with TLS but without authentication: {who} "
        "can read and write every topic (add [principals] to the security config)"
    )
