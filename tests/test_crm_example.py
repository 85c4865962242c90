"""The CRM example (examples/crm) against a live broker over real gRPC: the email,
notification and analytics groups each handle every lead event exactly once, in
each lead's order, the two analytics members share the work, and the groups'
committed offsets reach the log end.

The scripts run as subprocesses, as a reader of examples/crm/README.md would run
them; the test checks their JSON report and the broker's state itself rather than
trusting the demo's verdict.  The demo's checker is also fed broken runs, to show
that its verdict can fail."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from logstore._proto.logstore.v1 import groups_pb2, groups_pb2_grpc, log_pb2, log_pb2_grpc
from logstore.server.app import RunningServer, serve

REPO = Path(__file__).resolve().parent.parent
CRM_DIR = REPO / "examples" / "crm"
RUN_TIMEOUT = 120
WAIT_TIMEOUT = 30
SERVICES = ("email", "notification", "analytics")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningServer]:
    running = serve(tmp_path / "data", "127.0.0.1:0")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def channel(broker: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(broker.address) as chan:
        yield chan


@pytest.fixture
def run_demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/crm/run_demo.py imported as a module (its siblings import as top-level modules)."""
    monkeypatch.syspath_prepend(str(CRM_DIR))
    import run_demo

    return run_demo


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(CRM_DIR / name), *args]


def _wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _log_ends(channel: grpc.Channel, topic: str) -> dict[tuple[str, int], int]:
    request = log_pb2.ListOffsetsRequest(topic=topic, position=log_pb2.LOG_POSITION_LATEST)
    response = log_pb2_grpc.LogStub(channel).ListOffsets(request, timeout=10)
    return {(topic, p.partition): p.log_end_offset for p in response.partitions}


def _committed(channel: grpc.Channel, group: str) -> dict[tuple[str, int], int]:
    request = groups_pb2.FetchCommittedOffsetsRequest(group=group)
    response = groups_pb2_grpc.GroupsStub(channel).FetchCommittedOffsets(request, timeout=10)
    return {(o.topic, o.partition): o.offset for o in response.offsets}


def _members(channel: grpc.Channel, group: str) -> list[groups_pb2.GroupMember]:
    try:
        response = groups_pb2_grpc.GroupsStub(channel).DescribeGroup(
            groups_pb2.DescribeGroupRequest(group=group), timeout=10
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return []
        raise
    return list(response.members)


def test_demo_each_group_handles_every_event_once_in_lead_order(
    broker: RunningServer, channel: grpc.Channel, tmp_path: Path
) -> None:
    """run_demo.py exits 0, and each group handled every event once, per lead in seq order, analytics on both members."""
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        _script("run_demo.py", "--broker", broker.address, "--leads", "60", "--updates", "3",
                "--report", str(report_path)),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())

    published = {(e["lead_id"], e["seq"]): (e["partition"], e["offset"]) for e in report["published"]}
    assert len(published) == len(report["published"]) == 60 * 4
    # Keyed by lead id: each lead's events sit on one partition, in seq order.
    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (lead, seq), position in sorted(published.items()):
        positions[lead].append(position)
    assert all(len({p for p, _ in pos}) == 1 and pos == sorted(pos) for pos in positions.values())

    assert sorted(report["services"]) == sorted(SERVICES)
    for name, service in report["services"].items():
        handled = service["handled"]
        assert Counter((h["lead_id"], h["seq"]) for h in handled) == Counter(published.keys()), name
        assert all(published[h["lead_id"], h["seq"]] == (h["partition"], h["offset"]) for h in handled), name
        seqs: dict[str, list[int]] = defaultdict(list)
        for h in handled:  # in the order the service handled them
            seqs[h["lead_id"]].append(h["seq"])
        assert all(s == [0, 1, 2, 3] for s in seqs.values()), name

    analytics = report["services"]["analytics"]["handled"]
    shares = Counter(h["member"] for h in analytics)
    assert sorted(shares) == [0, 1] and min(shares.values()) > 0
    partitions_of = [{h["partition"] for h in analytics if h["member"] == m} for m in (0, 1)]
    assert not partitions_of[0] & partitions_of[1]

    # The broker's side: every group committed up to the log end, and every member left.
    ends = _log_ends(channel, "lead.created")
    assert sum(ends.values()) == 60 * 4
    for group in SERVICES:
        _wait_for(lambda: _committed(channel, group) == ends, f"{group}'s committed offsets to reach the log end")
        assert _members(channel, group) == []


def test_demo_runs_with_a_broker_of_its_own() -> None:
    """run_demo.py without --broker starts its own broker and prints a clean summary row per service."""
    result = subprocess.run(
        _script("run_demo.py", "--leads", "20", "--updates", "1"), capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("started a broker on 127.0.0.1:")
    rows = {parts[0]: parts for parts in map(str.split, result.stdout.splitlines()) if parts and parts[0] in SERVICES}
    for name, members in (("email", 1), ("notification", 1), ("analytics", 2)):
        # service, members, events, leads, dups, missing, out of order, earlier, then the shares
        assert rows[name][:8] == [name, str(members), "40", "20", "0", "0", "0", "0"]
    assert result.stdout.rstrip().splitlines()[-1].startswith("OK: ")


def test_services_and_publisher_run_by_hand(broker: RunningServer, channel: grpc.Channel) -> None:
    """services.py email handles what publish.py publishes, then leaves its group on SIGINT and exits 0."""
    # The service cannot join before the topic exists: it says so and exits 1.
    early = subprocess.run(
        _script("services.py", "email", "--broker", broker.address, "--topic", "leads"),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert early.returncode == 1 and "cannot join group email: NotFound" in early.stderr, early.stderr
    subprocess.run(
        _script("publish.py", "--broker", broker.address, "--topic", "leads", "--leads", "1", "--partitions", "3"),
        check=True, capture_output=True, timeout=RUN_TIMEOUT,
    )
    service = subprocess.Popen(
        _script("services.py", "email", "--broker", broker.address, "--topic", "leads"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # A new group starts at the log end; it is in place once its starting offsets are committed.
        _wait_for(lambda: len(_committed(channel, "email")) == 3, "the email group's starting offsets")
        before = _log_ends(channel, "leads")
        published = subprocess.run(
            _script("publish.py", "--broker", broker.address, "--topic", "leads", "--leads", "5", "--updates", "2"),
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
        assert published.returncode == 0, published.stderr
        assert published.stdout.startswith("published 15 events of 5 leads to leads (")
        ends = _log_ends(channel, "leads")
        assert sum(ends.values()) - sum(before.values()) == 15
        _wait_for(lambda: _committed(channel, "email") == ends, "the email group to commit every new event")
        service.send_signal(signal.SIGINT)
        out, err = service.communicate(timeout=RUN_TIMEOUT)
    finally:
        service.kill()
        service.wait()

    assert service.returncode == 0, err
    actions = out.splitlines()
    # 5 welcome emails, and a follow-up for each lead reaching "qualified" (its second update).
    assert sum(line.startswith("[email/0] welcome email to ") for line in actions) == 5
    assert sum(line.startswith("[email/0] follow-up email for ") for line in actions) == 5
    assert len(actions) == 10
    assert "handled 15 events, skipped 0" in err
    assert _members(channel, "email") == []


def test_demo_verdict_catches_duplicates_gaps_and_disorder(run_demo: ModuleType) -> None:
    """summarize() counts repeats, missing events, per-lead disorder and an idle member, and ok turns false."""
    from leads import generate_events
    from services import Handled, Service

    published = generate_events("test", 3, 2, seed=1)  # 9 events: seq 0-2 of 3 leads

    def summary(handled: list[tuple[int, str, int]]) -> object:
        service = Service("analytics", "127.0.0.1:1")  # never started: no connection is made
        service.handled = [Handled(member, lead, seq, 0, 0, 1) for member, lead, seq in handled]
        return run_demo.summarize(service, published)

    in_order = [(n % 2, e.lead_id, e.seq) for n, e in enumerate(published)]
    clean = summary(in_order)
    assert (clean.events, clean.leads, clean.duplicates, clean.missing, clean.out_of_order) == (9, 3, 0, 0, 0)
    assert clean.ok

    lead = published[0].lead_id
    assert summary(in_order + [(0, lead, 1)]).duplicates == 1
    assert summary(in_order[1:]).missing == 1
    swapped = [h for h in in_order if h[1] != lead] + [(0, lead, 2), (0, lead, 1), (0, lead, 0)]
    assert summary(swapped).out_of_order == 2  # seq 1 and seq 0 came after seq 2
    idle = summary([(0, lead_id, seq) for _, lead_id, seq in in_order])
    assert idle.per_member == (9, 0) and not idle.ok
    assert not summary(in_order + [(0, lead, 1)]).ok
