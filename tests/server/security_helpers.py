"""Helpers for the security tests: a throwaway PKI made with the ``openssl`` CLI
at run time (no key is ever committed), security files, and tokens.

``make_pki(dir)`` writes two unrelated CAs: the *trusted* one signs the
broker's certificate (subjectAltName IP:127.0.0.1 and DNS:localhost) and a
client certificate; the *rogue* one signs a second client certificate that a
mutual-TLS broker trusting only the first CA must refuse.  Keys are EC P-256
(fast to make) in PKCS#8 PEM.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from logstore.server.auth import hash_token, new_token
from logstore.server.security import SecurityConfig

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files ``make_pki`` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")


def _new_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN=logstore test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    return cert, key


def _new_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    ext.write_text(extensions)
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}",
        cwd=directory,
    )
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial",
        "-out", cert.name, "-days", "2", "-extfile", ext.name,
        cwd=directory,
    )
    return cert, key


def make_pki(directory: Path) -> Pki:
    """A trusted CA with a server and a client certificate, and a rogue CA with a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _new_ca(directory, "ca")
    server = _new_leaf(
        directory, "server", ca,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    client = _new_leaf(directory, "client", ca, client_ext)
    rogue_ca = _new_ca(directory, "rogue-ca")
    rogue = _new_leaf(directory, "rogue-client", rogue_ca, client_ext)
    return Pki(ca[0], server[0], server[1], client[0], client[1], rogue_ca[0], rogue[0], rogue[1])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """A fresh throwaway PKI for the module's tests (skipped only without an ``openssl`` binary)."""
    if OPENSSL is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    yield make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class Tokens:
    """Fresh tokens by principal name, and the TOML lines holding their hashes."""

    by_name: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.by_name[name]


def make_tokens(*names: str) -> Tokens:
    return Tokens({name: new_token() for name in names})


def security_toml(tokens: Tokens, grants: dict[str, str], extra: str = "") -> str:
    """A security file: for each principal its token hash and the TOML body of its grants."""
    parts = [extra]
    for name, token in tokens.by_name.items():
        parts.append(f'[principals.{name}]\ntoken_sha256 = "{hash_token(token)}"\n{grants.get(name, "")}\n')
    return "\n".join(parts)


def security_config(path: Path, text: str) -> SecurityConfig:
    """Write ``text`` to ``path`` and load it as ``logstore serve --security-config`` would."""
    path.write_text(text)
    return SecurityConfig.from_file(path)
