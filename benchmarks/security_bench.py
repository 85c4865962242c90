"""Security benchmark: what the interceptor (tokens, record limit, quotas) costs the produce path.

Run it as::

    python benchmarks/security_bench.py             # 500,000 records per setup, about a minute
    python benchmarks/security_bench.py --quick     # 100,000 records per setup

For each setup a broker is started as a separate process, ``python -m
logstore serve --data-dir TMP --listen 127.0.0.1:PORT [--security-config
FILE]``, and this process produces to it:

- ``off``: ``[limits] max_records_per_request = -1``, no tokens, no quota:
  the broker installs no interceptor at all;
- ``defaults``: no security file (the default record limit: the interceptor
  checks each produce request's record count);
- ``tokens``: one principal with ``"*"`` permissions; the client sends its
  token (plaintext, so through the client's metadata interceptor) and the
  broker hashes and checks it on every call and authorizes every request;
- ``tokens+quota``: the same with a produce quota of 10 GB/s for the
  principal, so every request is charged to a token bucket but never waits.

Phases per setup: bulk produce (``Producer.send`` of ``records`` 100-byte
values with keys ``k0``..``k999`` into 8 partitions, ``acks="leader"``, then
``flush()``; the rate counts from the first send until every record is
acknowledged) and a unary round trip (``Log.Produce`` of one record to
partition 0 through the generated stub, ``RTT_SAMPLES`` times after
``RTT_WARMUP``, timed with ``perf_counter_ns``; percentiles nearest-rank).
Units: MB = 10**6 bytes of values.

What this does NOT tell you: TLS costs (encryption is gRPC's C core and
depends on the CPU; not measured here), the cost of throttling itself (a
throttled request waits on purpose), or anything about consumers.  Client
and broker share the machine's cores and one run moves by 10-20 % on a
shared VM: compare setups within one run, and rerun before believing a
difference of a few percent.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO_ROOT))

import grpc  # noqa: E402

from logstore._proto.logstore.v1 import log_pb2, log_pb2_grpc, records_pb2  # noqa: E402
from logstore.client import Admin, Producer  # noqa: E402
from logstore.server.auth import hash_token, new_token  # noqa: E402

VALUE = b"v" * 100
PARTITIONS = 8
DEFAULT_RECORDS = 500_000
QUICK_RECORDS = 100_000
RTT_WARMUP = 200
RTT_SAMPLES = 2_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``python -m logstore serve`` with an optional security file, stopped with SIGTERM."""

    def __init__(self, directory: Path, security: str | None) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        argv = [sys.executable, "-m", "logstore", "serve", "--data-dir", str(directory / "data"),
                "--listen", self.address, "--log-level", "warning"]
        if security is not None:
            path = directory / "security.toml"
            path.write_text(security)
            argv += ["--security-config", str(path)]
        env = {**os.environ, "PYTHONPATH": str(_REPO_ROOT)}
        self.proc = subprocess.Popen(argv, cwd=_REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if " ready " in line:
                return
        raise RuntimeError(f"the broker did not start: exit {self.proc.wait()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def percentile(ordered: Sequence[int], pct: float) -> float:
    return ordered[max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))] / 1e6


def run_setup(name: str, security: str | None, token: str | None, records: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"security-bench-{name}-") as tmp:
        broker = Broker(Path(tmp), security)
        try:
            with Admin(broker.address, token=token) as admin:
                admin.create_topic("bench", PARTITIONS)
            keys = [f"k{i}".encode() for i in range(1000)]
            with Producer(broker.address, token=token) as producer:
                started = time.perf_counter()
                send = producer.send
                for i in range(records):
                    send("bench", VALUE, key=keys[i % 1000])
                producer.flush()
                elapsed = time.perf_counter() - started
            request = log_pb2.ProduceRequest(topic="bench", partition=0, records=[records_pb2.ProducerRecord(value=VALUE)])
            metadata = [("authorization", f"Bearer {token}")] if token else None
            samples = []
            with grpc.insecure_channel(broker.address) as channel:
                produce = log_pb2_grpc.LogStub(channel).Produce
                for i in range(RTT_WARMUP + RTT_SAMPLES):
                    t0 = time.perf_counter_ns()
                    produce(request, metadata=metadata, timeout=10)
                    if i >= RTT_WARMUP:
                        samples.append(time.perf_counter_ns() - t0)
            samples.sort()
            return {
                "rate": records / elapsed,
                "mb": records * len(VALUE) / elapsed / 1e6,
                "p50": percentile(samples, 50),
                "p99": percentile(samples, 99),
            }
        finally:
            broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help=f"records per setup (default {DEFAULT_RECORDS:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records per setup")
    args = parser.parse_args(argv)
    records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    token = new_token()
    principal = f'[principals.bench]\ntoken_sha256 = "{hash_token(token)}"\ntopics = {{ "*" = ["produce", "consume", "admin"] }}\n'
    setups = [
        ("off", "[limits]\nmax_records_per_request = -1\n", None),
        ("defaults", None, None),
        ("tokens", principal, token),
        ("tokens+quota", principal + "\n[quotas.principals]\nbench = 10000000000\n", token),
    ]
    print(f"security_bench: {records:,} records of {len(VALUE)} bytes per setup, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'setup':<14} {'records/s':>12} {'MB/s':>8} {'rtt p50 ms':>11} {'rtt p99 ms':>11}")
    for name, security, tok in setups:
        r = run_setup(name, security, tok, records)
        print(f"{name:<14} {r['rate']:>12,.0f} {r['mb']:>8.1f} {r['p50']:>11.3f} {r['p99']:>11.3f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
