"""examples/exactly_once/invoicer.py as a reader would run it: SIGKILLed in the middle of its work and started
again, it leaves exactly one invoice per order, in order, with the group's offset at the end of the orders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logstore.client import Admin, Producer, Reader
from logstore.server.app import serve

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "exactly_once" / "invoicer.py"
ORDERS = 3_000
PARTITIONS = 2


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _invoices(address: str) -> dict[int, list[dict]]:
    with Reader(address, "invoices", start="earliest", follow=False) as reader:
        out: dict[int, list[dict]] = {p: [] for p in range(PARTITIONS)}
        for message in reader:
            out[message.partition].append(json.loads(message.value))
        return out


@pytest.fixture
def broker(tmp_path: Path):
    running = serve(tmp_path / "data", "127.0.0.1:0")
    yield running
    running.stop(grace=1.0)


def test_the_invoicer_killed_midway_and_restarted_invoices_every_order_exactly_once(broker) -> None:
    """A SIGKILLed invoicer resumes from its commit: one invoice per order, in order, offsets at the end."""
    admin = Admin(broker.address)
    admin.create_topic("orders", PARTITIONS)
    admin.create_topic("invoices", PARTITIONS)
    expected: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    with Producer(broker.address) as producer:
        for i in range(ORDERS):
            partition = i % PARTITIONS
            producer.send("orders", json.dumps({"order": f"o-{i}", "qty": i % 7 + 1}).encode(), partition=partition)
            expected[partition].append(f"o-{i}")

    first = subprocess.Popen([sys.executable, str(SCRIPT), "--broker", broker.address, "--once", "--chunk", "5"],
                             env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while sum(len(v) for v in _invoices(broker.address).values()) < ORDERS // 4:
        assert first.poll() is None, f"the invoicer ended early: {first.communicate()}"
        assert time.monotonic() < deadline, "the invoicer made no progress"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    partial = sum(len(v) for v in _invoices(broker.address).values())
    assert partial < ORDERS, "the invoicer finished before it was killed: the test proved nothing"

    second = subprocess.run([sys.executable, str(SCRIPT), "--broker", broker.address, "--once", "--chunk", "5"],
                            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert f"invoiced {ORDERS - partial} order(s)" in second.stdout, (second.stdout, partial)

    invoices = _invoices(broker.address)
    for partition in range(PARTITIONS):
        assert [inv["invoice_for"] for inv in invoices[partition]] == expected[partition]
    committed = {tp: c.offset for tp, c in admin.fetch_committed_offsets("invoicer").items()}
    assert committed == {("orders", p): len(expected[p]) for p in range(PARTITIONS)}
