"""TLS and mutual TLS on a real broker, with a throwaway PKI made by the openssl
CLI: the Python clients and the CLI connect with the right CA and client
certificate, and everything else (plaintext, an untrusted server, a client
certificate from another CA, none at all) is refused in the handshake.  Also
``logstore serve`` with TLS and a security file as a real process, and its
startup warning when it listens beyond loopback unprotected."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from logstore.client import Admin, ClientTLS, Consumer, Producer, Reader
from logstore.errors import InvalidArgument, LogClosed, Unauthenticated
from logstore.server.app import RunningServer
from logstore.server.tls import ServerTLS
from security_helpers import Pki, make_tokens, pki, security_config, security_toml  # noqa: F401 - pki is a fixture

LOGSTORE = Path(sys.executable).parent / "logstore"


@pytest.fixture
def mtls_server(start_server: Callable[..., RunningServer], pki: Pki) -> RunningServer:  # noqa: F811
    """A broker that requires client certificates signed by the trusted test CA."""
    return start_server(tls=ServerTLS.load(pki.server_cert, pki.server_key, pki.ca))


def good(pki: Pki) -> ClientTLS:  # noqa: F811
    return ClientTLS(pki.ca, pki.client_cert, pki.client_key)


def test_tls_server_serves_clients_that_trust_its_ca(start_server: Callable[..., RunningServer], pki: Pki) -> None:  # noqa: F811
    """Server-only TLS: a client trusting the CA works; plaintext and a client trusting another CA are refused."""
    running = start_server(tls=ServerTLS.load(pki.server_cert, pki.server_key))
    with Admin(running.address, tls=ClientTLS(pki.ca)) as admin:
        admin.create_topic("t", 1)
    with Admin(f"localhost:{running.port}", tls=ClientTLS(pki.ca)) as by_name:  # DNS:localhost in the SAN
        assert [t.name for t in by_name.list_topics()] == ["t"]
    for refused in (Admin(running.address, timeout=5), Admin(running.address, tls=ClientTLS(pki.rogue_ca), timeout=5)):
        with refused, pytest.raises(LogClosed, match="unavailable"):
            refused.list_topics()


def test_mutual_tls_clients_with_a_trusted_certificate_work(mtls_server: RunningServer, pki: Pki) -> None:  # noqa: F811
    """Producer, Reader, Consumer and Admin all connect with the CA, a client certificate and its key."""
    tls = good(pki)
    with Admin(mtls_server.address, tls=tls) as admin:
        admin.create_topic("secure", 1)
    with Producer(mtls_server.address, tls=tls, acks="durable") as producer:
        assert producer.send("secure", b"over tls").result(timeout=10).offset == 0
    with Reader(mtls_server.address, "secure", follow=False, tls=tls) as reader:
        assert [m.value for m in reader] == [b"over tls"]
    with Consumer(mtls_server.address, "g", ["secure"], start="earliest", tls=tls) as consumer:
        message = consumer.poll(10)
        assert message is not None and message.value == b"over tls"


def test_mutual_tls_refuses_other_clients(mtls_server: RunningServer, pki: Pki) -> None:  # noqa: F811
    """A client certificate from another CA, no client certificate, or plaintext never reach a handler."""
    for tls in (ClientTLS(pki.ca, pki.rogue_client_cert, pki.rogue_client_key), ClientTLS(pki.ca), None):
        with Admin(mtls_server.address, tls=tls, timeout=5) as admin, pytest.raises(LogClosed):
            admin.list_topics()
    # The broker is unharmed: the right client still works.
    with Admin(mtls_server.address, tls=good(pki)) as admin:
        assert admin.list_topics() == []


def test_client_tls_options_are_checked(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """A certificate without its key, or a file that cannot be read, is an InvalidArgument naming the file."""
    with pytest.raises(InvalidArgument, match="go together"):
        ClientTLS(pki.ca, cert_file=pki.client_cert)
    with pytest.raises(InvalidArgument, match="missing.pem"):
        Admin("127.0.0.1:1", tls=ClientTLS(tmp_path / "missing.pem"))
    with pytest.raises(InvalidArgument, match="does not fit"):
        ServerTLS.load(pki.server_cert, pki.client_key)


def test_tokens_over_mutual_tls(start_server: Callable[..., RunningServer], pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """TLS and tokens together: the token rides on the TLS channel; a certificate alone is not a principal."""
    tokens = make_tokens("app")
    security = security_config(tmp_path / "s.toml", security_toml(tokens, {"app": 'topics = { "*" = ["admin"] }'}))
    running = start_server(tls=ServerTLS.load(pki.server_cert, pki.server_key, pki.ca), security=security)
    with Admin(running.address, tls=good(pki), token=tokens["app"]) as admin:
        admin.create_topic("both", 1)
        assert [t.name for t in admin.list_topics()] == ["both"]
    with Admin(running.address, tls=good(pki)) as admin, pytest.raises(Unauthenticated):
        admin.list_topics()


# -- the CLI: logstore serve and client commands -----------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOGSTORE_")}
    return subprocess.run([str(LOGSTORE), *args], input=stdin, capture_output=True, env={**clean, **(env or {})},
                          timeout=60, check=False)


def _start_serve(*args: str) -> tuple[subprocess.Popen, str, list[str]]:
    """Run `logstore serve ARGS` until it says ready; returns the process, its address and its log lines so far."""
    proc = subprocess.Popen([str(LOGSTORE), "serve", *args], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"logstore (\S+:\d+) ready", line)
        if found:
            return proc, found.group(1), lines
    proc.wait(timeout=10)
    raise AssertionError(f"logstore serve exited {proc.returncode}:\n{''.join(lines)}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_with_mutual_tls_and_tokens_end_to_end(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """`auth new-token` mints the token, `serve` takes TLS options and the file, client commands connect with both."""
    minted = _cli("auth", "new-token", "--principal", "cli-user")
    assert minted.returncode == 0, minted.stderr
    token, table = minted.stdout.decode().split("\n", 1)
    assert token.startswith("lst_") and token not in table and "token_sha256" in table
    table = table.replace("topics = {}", 'topics = { "*" = ["produce", "consume", "admin"] }')
    (tmp_path / "security.toml").write_text(table)
    proc, address, _ = _start_serve(
        "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--security-config", str(tmp_path / "security.toml"),
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca),
    )
    try:
        tls_flags = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        created = _cli("topics", "create", "cli-topic", "--broker", address, *tls_flags, "--token-file", str(token_file))
        assert created.returncode == 0, created.stderr
        env = {"LOGSTORE_BROKER": address, "LOGSTORE_TLS_CA": str(pki.ca), "LOGSTORE_TLS_CERT": str(pki.client_cert),
               "LOGSTORE_TLS_KEY": str(pki.client_key), "LOGSTORE_TOKEN": token}
        produced = _cli("produce", "cli-topic", stdin=b"one\ntwo\n", env=env)
        assert produced.returncode == 0, produced.stderr
        consumed = _cli("consume", "cli-topic", "--from-beginning", "--no-follow", env=env)
        assert [json.loads(line)["value"] for line in consumed.stdout.decode().splitlines()] == ["one", "two"]
        no_token = _cli("topics", "list", "--broker", address, *tls_flags)
        assert no_token.returncode == 1 and b"requires a token" in no_token.stderr
        rogue = _cli("topics", "list", "--broker", address, "--tls-ca", str(pki.ca), "--tls-cert",
                     str(pki.rogue_client_cert), "--tls-key", str(pki.rogue_client_key), env={"LOGSTORE_TOKEN": token})
        assert rogue.returncode == 1 and b"unavailable" in rogue.stderr
    finally:
        assert _stop(proc) == 0


def test_cli_serve_refuses_half_a_tls_setup(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """--tls-cert without --tls-key, or a broken security file, stop `serve` with one clear line and exit 1."""
    half = _cli("serve", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(pki.server_cert))
    assert half.returncode == 1 and b"--tls-cert and --tls-key go together" in half.stderr
    (tmp_path / "bad.toml").write_text("[limits]\nmax_records = 5\n")
    bad = _cli("serve", "--data-dir", str(tmp_path / "d"), "--security-config", str(tmp_path / "bad.toml"))
    assert bad.returncode == 1 and b"unknown setting" in bad.stderr


def test_serve_warns_when_listening_beyond_loopback_unprotected(pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """Off loopback without TLS and tokens, `serve` logs a WARNING; with both it does not; loopback never warns."""
    tokens = make_tokens("ops")
    (tmp_path / "s.toml").write_text(security_toml(tokens, {}))
    cases = [
        (["--listen", "0.0.0.0:0"], "without TLS or authentication"),
        (["--listen", "0.0.0.0:0", "--security-config", str(tmp_path / "s.toml")], "without TLS"),
        (["--listen", "0.0.0.0:0", "--security-config", str(tmp_path / "s.toml"),
          "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)], None),
        (["--listen", "127.0.0.1:0"], None),
    ]
    for n, (args, warning) in enumerate(cases):
        proc, _, lines = _start_serve("--data-dir", str(tmp_path / f"data{n}"), *args)
        assert _stop(proc) == 0
        warnings = [line for line in lines if " WARNING " in line]
        if warning is None:
            assert warnings == [], args
        else:
            assert len(warnings) == 1 and warning in warnings[0], (args, lines)


def test_default_listen_address_is_loopback() -> None:
    """Without --listen, `serve` binds 127.0.0.1 only."""
    from logstore.cli import build_parser

    assert build_parser().parse_args(["serve", "--data-dir", "d"]).listen.startswith("127.0.0.1:")
