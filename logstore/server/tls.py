"""TLS for the broker: its certificate and key, and optionally the CA that
client certificates must be signed by (mutual TLS).

``ServerTLS.load(cert, key, client_ca)`` reads the PEM files once, at
startup, and ``credentials()`` turns them into gRPC server credentials.
With ``client_ca_file`` every client must present a certificate that chains
to that CA (``require_client_auth``); a connection without one, or with one
from another CA, fails in the handshake and never reaches a handler.

What this does NOT do: reload certificates (restart the broker after
rotating them), check revocation (no CRL or OCSP), map a client
certificate to a principal (the bearer token names the principal; see
``logstore.server.auth``), or choose protocol versions and ciphers (gRPC's
BoringSSL defaults: TLS 1.2 and 1.3).  ``load`` checks that the key fits
the certificate with the stdlib's ``ssl`` (so the error names the files).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from logstore.errors import InvalidArgument

_LOGGER = logging.getLogger(__name__)

__all__ = ["ServerTLS", "read_pem"]


def read_pem(path: str | Path, what: str, marker: bytes = b"-----BEGIN ") -> bytes:
    """The bytes of a PEM file, or InvalidArgument naming the file and what it should hold."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if marker not in data:
        raise InvalidArgument(f"{path} does not hold a PEM {what} (no {marker.decode().strip()!r} line)")
    return data


def _check_with_openssl(cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None) -> None:
    """Parse the files with the stdlib's OpenSSL binding so that a key that does not
    belong to the certificate (or a broken PEM) is reported by name at startup,
    rather than as gRPC's "Failed to bind to address"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise InvalidArgument(
            f"the TLS key {key_file} does not fit the certificate {cert_file}, or one of them is unusable: {exc.reason or exc}"
        ) from None
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=str(client_ca_file))
        except ssl.SSLError as exc:
            raise InvalidArgument(f"the client CA {client_ca_file} is not a usable CA certificate: {exc.reason or exc}") from None


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The broker's certificate chain and key (PEM), and the client CA for mutual TLS."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    cert_file: str = ""
    client_ca_file: str | None = None

    @classmethod
    def load(cls, cert_file: str | Path, key_file: str | Path, client_ca_file: str | Path | None = None) -> "ServerTLS":
        """Read the PEM files (InvalidArgument naming the file if one is missing or not PEM)."""
        cert = read_pem(cert_file, "TLS certificate", b"-----BEGIN CERTIFICATE")
        key = read_pem(key_file, "TLS private key", b"PRIVATE KEY")
        ca = read_pem(client_ca_file, "client CA certificate", b"-----BEGIN CERTIFICATE") if client_ca_file else None
        _check_with_openssl(cert_file, key_file, client_ca_file)
        return cls(cert, key, ca, str(cert_file), str(client_ca_file) if client_ca_file else None)

    @property
    def mutual(self) -> bool:
        """True if clients must present a certificate signed by ``client_ca``."""
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )
