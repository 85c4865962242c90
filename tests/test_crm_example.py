"""The CRM example (examples/crm) against a live broker over real gRPC: the email,
notification and analytics groups each handle every lead event exactly once, in
each lead's order, the two analytics members share the work, and the groups'
committed offsets reach the log end.  In the failure story (failure_demo.py) the
email service's welcome emails to bounce.example fail, are retried with backoff,
dead-lettered with provenance, and redriven after the fix, so every lead gets
exactly one welcome email while the other services are unaffected.

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
from logstore.client import Admin, DeadLetter, Message, Reader, RecordMetadata
from logstore.server.app import RunningServer, serve

REPO = Path(__file__).resolve().parent.parent
CRM_DIR = REPO / "examples" / "crm"
RUN_TIMEOUT = 120
WAIT_TIMEOUT = 30
SERVICES = ("email", "notification", "analytics")
RETRY_TIERS = ("lead.created.email.retry.200ms", "lead.created.email.retry.400ms")
REDRIVE = "lead.created.email.redrive"
DLQ = "lead.created.email.dlq"
EARLY_SLACK_S = 0.002  # the broker's clock counts whole milliseconds


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


@pytest.fixture
def failure_demo(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """examples/crm/failure_demo.py imported as a module."""
    monkeypatch.syspath_prepend(str(CRM_DIR))
    import failure_demo

    return failure_demo


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(CRM_DIR / name), *args]


def _logstore(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logstore", *args, "--broker", address],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)


def _read_topic(address: str, topic: str) -> list[Message]:
    with Reader(address, topic, start="earliest", follow=False) as reader:
        return list(reader)


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


def _run_failure_demo(address: str, report_path: Path, leads: int) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = subprocess.run(
        _script("failure_demo.py", "--broker", address, "--leads", str(leads), "--updates", "3",
                "--bounce-every", "5", "--timeout", "20", "--report", str(report_path)),
        capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(report_path.read_text())


def test_failure_demo_retries_dead_letters_and_redrives_to_one_welcome_per_lead(
    broker: RunningServer, channel: grpc.Channel, tmp_path: Path
) -> None:
    """failure_demo.py: bouncing welcomes retry with backoff, become dead letters, and go out once after the redrive."""
    result, report = _run_failure_demo(broker.address, tmp_path / "report.json", leads=30)
    published = {(e["lead_id"], e["seq"]): (e["partition"], e["offset"]) for e in report["published"]}
    assert len(published) == len(report["published"]) == 30 * 4
    bouncing = {e["lead_id"] for e in report["published"] if e["seq"] == 0 and e["email"].endswith("@bounce.example")}
    assert bouncing == {lead for lead, seq in published if seq == 0 and int(lead.rsplit("-", 1)[1]) % 5 == 0}
    assert len(bouncing) == 6 and report["bouncing"] == sorted(bouncing)

    email = report["services"]["email"]["handled"]
    # Every lead got exactly one successful welcome email: at once from v1, or for a bouncing lead
    # from v2 (the fix) out of the redrive topic, its attempts reset.
    welcomes = [h for h in email if h["seq"] == 0 and h["error"] is None]
    assert Counter(h["lead_id"] for h in welcomes) == Counter(lead for lead, seq in published if seq == 0)
    for h in welcomes:
        told = (2, 1, REDRIVE) if h["lead_id"] in bouncing else (1, 1, "lead.created")
        assert (h["version"], h["attempt"], h["via"]) == told, h
        assert (h["partition"], h["offset"]) == published[h["lead_id"], 0]
    # The only failures: each bouncing welcome at attempts 1, 2, 3, from the topic then the two
    # tiers, each no earlier than the policy's wait; the lead's updates waited for the last one.
    failures: dict[str, list[dict]] = defaultdict(list)
    for h in email:
        if h["error"] is not None:
            assert h["seq"] == 0, h
            failures[h["lead_id"]].append(h)
    assert set(failures) == bouncing
    for lead, tries in failures.items():
        assert [(h["version"], h["attempt"], h["via"]) for h in tries] == [
            (1, 1, "lead.created"), (1, 2, RETRY_TIERS[0]), (1, 3, RETRY_TIERS[1])
        ]
        assert all("bounce.example" in h["error"] and (h["partition"], h["offset"]) == published[lead, 0] for h in tries)
        for before, after, wait in zip(tries, tries[1:], (0.2, 0.4)):
            assert wait - EARLY_SLACK_S <= after["at"] - before["at"] < wait + 2.0, (lead, before, after)
        assert all(h["at"] > tries[-1]["at"] for h in email if h["lead_id"] == lead and h["seq"] > 0)
    # Every update once, in each lead's order, at attempt 1.
    updates = [h for h in email if h["seq"] > 0]
    assert Counter((h["lead_id"], h["seq"]) for h in updates) == Counter(k for k in published if k[1] > 0)
    assert all(h["attempt"] == 1 and h["via"] == "lead.created" for h in updates)
    update_seqs: dict[str, list[int]] = defaultdict(list)
    for h in updates:
        update_seqs[h["lead_id"]].append(h["seq"])
    assert all(s == [1, 2, 3] for s in update_seqs.values())

    # The other groups had no retry policy and saw every event once, at attempt 1, in lead order.
    for name in ("notification", "analytics"):
        handled = report["services"][name]["handled"]
        assert Counter((h["lead_id"], h["seq"]) for h in handled) == Counter(published.keys()), name
        assert all(h["attempt"] == 1 and h["via"] == "lead.created" and h["error"] is None for h in handled), name
        seqs: dict[str, list[int]] = defaultdict(list)
        for h in handled:
            seqs[h["lead_id"]].append(h["seq"])
        assert all(s == [0, 1, 2, 3] for s in seqs.values()), name

    # The dead letters as the demo listed them before the fix, with their provenance.
    dead = report["dead_letters_before_fix"]
    assert sorted(d["key"] for d in dead) == sorted(bouncing)
    for d in dead:
        assert (d["origin_topic"], d["origin_partition"], d["origin_offset"]) == ("lead.created", *published[d["key"], 0])
        assert d["partition"] == d["origin_partition"] and d["attempts"] == 3 and "bounce.example" in d["error"]
        assert 0 < d["first_failure_ms"] < d["dead_lettered_ms"]
    assert report["dead_letters_after_redrive"] == []

    # The broker's side: the DLQ is empty, and the retry path as stored holds each bouncing
    # welcome once per step, with its origin and the attempts made (reset to 0 by the redrive).
    with Admin(broker.address) as admin:
        assert list(admin.list_dead_letters("email", "lead.created")) == []
        topics = {t.name for t in admin.list_topics()}
    assert topics == {"lead.created", *RETRY_TIERS, DLQ, REDRIVE}  # none for notification or analytics
    for topic, attempts in ((RETRY_TIERS[0], b"1"), (RETRY_TIERS[1], b"2"), (DLQ, b"3"), (REDRIVE, b"0")):
        copies = _read_topic(broker.address, topic)
        assert sorted(m.key.decode() for m in copies) == sorted(bouncing), topic
        for m in copies:
            headers = dict(m.headers)
            origin = (int(headers["logstore.origin.partition"]), int(headers["logstore.origin.offset"]))
            assert headers["logstore.origin.topic"] == b"lead.created" and headers["logstore.attempt"] == attempts
            assert origin == published[m.key.decode(), 0] and m.partition == origin[0], topic
    # Every group committed everything it reads, and every member left.
    ends = _log_ends(channel, "lead.created")
    email_ends = {tp: end for topic in ("lead.created", *RETRY_TIERS, REDRIVE)
                  for tp, end in _log_ends(channel, topic).items()}
    _wait_for(lambda: {tp: o for tp, o in _committed(channel, "email").items() if tp in email_ends} == email_ends,
              "the email group to commit its topic, tiers and redrive topic")
    for group in ("notification", "analytics"):
        _wait_for(lambda: _committed(channel, group) == ends, f"{group}'s committed offsets to reach the log end")
    assert all(_members(channel, group) == [] for group in SERVICES)

    # What the reader sees: the failed attempts as they happened, the real CLI's output, the verdict.
    lines = result.stdout.splitlines()
    for attempt in (1, 2, 3):
        assert sum(f"welcome email failed, attempt {attempt} of 3" in line for line in lines) == 6
    listing = lines.index(f"$ logstore dlq list email lead.created --broker {broker.address}")
    header = ["PARTITION", "OFFSET", "ORIGIN", "ATTEMPTS", "DEAD-LETTERED", "ERROR", "KEY", "VALUE"]
    assert lines[listing + 1].split() == header
    assert sorted(line.split()[-2] for line in lines[listing + 2: listing + 8]) == sorted(bouncing)
    assert "  redrove 6 dead letter(s)" in lines and report["redrive_output"] == "redrove 6 dead letter(s)\n"
    assert lines[-1].startswith("OK: every lead got exactly one welcome email")


def test_failure_demo_runs_again_on_the_same_broker(broker: RunningServer, tmp_path: Path) -> None:
    """failure_demo.py passes twice on one broker, each run redriving only its own dead letters; run_demo.py then too."""
    for n in (1, 2):
        _, report = _run_failure_demo(broker.address, tmp_path / f"report{n}.json", leads=10)
        assert sorted(d["key"] for d in report["dead_letters_before_fix"]) == report["bouncing"]
        assert len(report["bouncing"]) == 2
        sent = [h["lead_id"] for h in report["services"]["email"]["handled"] if h["version"] == 2]
        assert sorted(sent) == report["bouncing"]
    result = subprocess.run(_script("run_demo.py", "--broker", broker.address, "--leads", "10", "--updates", "1"),
                            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_failure_story_by_hand_with_the_cli(broker: RunningServer, channel: grpc.Channel) -> None:
    """README's failure story by hand: retry-policy, a refusing email service, dlq list, the fix, dlq redrive."""
    assert _logstore(broker.address, "topics", "create", "leads", "--partitions", "3").returncode == 0
    policy = _logstore(broker.address, "groups", "retry-policy", "email", "leads", "--max-attempts", "3",
                       "--delays", "200ms,400ms")
    assert policy.returncode == 0, policy.stderr
    assert "leads.email.retry.200ms" in policy.stdout and "dead-letter topic: leads.email.dlq" in policy.stdout

    def service(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(_script("services.py", "email", "--broker", broker.address, "--topic", "leads", *extra),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, err
        return out, err

    def main_committed() -> int:
        return sum(1 for topic, _ in _committed(channel, "email") if topic == "leads")

    def dead_letters() -> list[DeadLetter]:
        with Admin(broker.address) as admin:
            return list(admin.list_dead_letters("email", "leads"))

    broken = service("--refuse-domain", "bounce.example")
    try:
        _wait_for(lambda: main_committed() == 3, "the email group's starting offsets")
        published = subprocess.run(
            _script("publish.py", "--broker", broker.address, "--topic", "leads", "--leads", "4", "--updates", "1",
                    "--bounce-every", "2"),
            capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )
        assert published.returncode == 0, published.stderr
        _wait_for(lambda: len(dead_letters()) == 2, "the two bouncing welcome emails to be dead letters")
        listed = _logstore(broker.address, "dlq", "list", "email", "leads", "--json")
        out, err = stop(broken)
    finally:
        broken.kill()
        broken.wait()
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(d["origin_topic"], d["attempts"]) for d in letters] == [("leads", 3)] * 2
    assert all("relay access denied" in d["error"] for d in letters)
    actions = out.splitlines()
    for attempt, via in ((1, "leads"), (2, "leads.email.retry.200ms"), (3, "leads.email.retry.400ms")):
        assert sum(f": attempt {attempt} from {via} failed: mail provider" in line for line in actions) == 2
    assert sum(line.startswith("[email/0] welcome email to ") for line in actions) == 2
    assert "handled 6 events, skipped 0, 6 failed attempt(s)" in err

    fixed = service()
    try:
        redrive = _logstore(broker.address, "dlq", "redrive", "email", "leads")
        assert redrive.returncode == 0 and redrive.stdout == "redrove 2 dead letter(s)\n", redrive.stderr
        ends = _log_ends(channel, "leads.email.redrive")
        assert sum(ends.values()) == 2
        _wait_for(lambda: {tp: o for tp, o in _committed(channel, "email").items() if tp in ends} == ends,
                  "the fixed service to handle the redriven events")
        out, err = stop(fixed)
    finally:
        fixed.kill()
        fixed.wait()
    sent = out.splitlines()
    assert len(sent) == 2 and "handled 2 events, skipped 0" in err
    assert all(line.startswith("[email/0] welcome email to ") and "@bounce.example (lead-" in line
               and line.endswith(" (attempt 1, from leads.email.redrive)") for line in sent), sent
    assert sorted(line.split("(")[1].split(")")[0] for line in sent) == sorted(d["key"] for d in letters)
    emptied = _logstore(broker.address, "dlq", "list", "email", "leads")
    assert emptied.returncode == 0 and emptied.stdout == "" and "no dead letters" in emptied.stderr


def test_failure_verdict_catches_duplicates_missed_retries_and_leftovers(failure_demo: ModuleType) -> None:
    """summarize_email() flags duplicate welcomes, short or early retries, unparked updates, missing or leftover DLQ."""
    from dataclasses import replace

    from leads import generate_events
    from services import Handled

    published = generate_events("test", 4, 2, seed=1, bounce_every=2)  # leads 0 and 2 bounce; 12 events
    placed = [RecordMetadata("lead.created", 0, n, 0) for n in range(len(published))]
    offset = {(e.lead_id, e.seq): n for n, e in enumerate(published)}
    bouncing = {e.lead_id for e in published if e.seq == 0 and e.data["email"].endswith("@bounce.example")}
    assert len(bouncing) == 2
    clock = iter(range(1000))  # a second between handlings: no retry is early
    v1: list[Handled] = []
    dead: list[DeadLetter] = []
    for e in published:
        at = offset[e.lead_id, e.seq]
        if e.seq == 0 and e.lead_id in bouncing:
            error = f"mail provider: 554 5.7.1 <{e.data['email']}>: relay access denied"
            for attempt, via in ((1, "lead.created"), (2, RETRY_TIERS[0]), (3, RETRY_TIERS[1])):
                v1.append(Handled(0, e.lead_id, 0, 0, at, attempt, via, error, float(next(clock))))
            dead.append(DeadLetter(0, len(dead), e.lead_id.encode(), e.encode(), (), 0, "lead.created", 0, at, 3, 1,
                                   error, 2))
        else:
            v1.append(Handled(0, e.lead_id, e.seq, 0, at, 1, "lead.created", None, float(next(clock))))
    v2 = [Handled(0, lead, 0, 0, offset[lead, 0], 1, REDRIVE, None, float(next(clock))) for lead in sorted(bouncing)]

    def verdict(v1: list[Handled] = v1, v2: list[Handled] = v2, dead: list[DeadLetter] = dead, left: int = 0) -> object:
        return failure_demo.summarize_email(v1, v2, published, placed, dead, left)

    clean = verdict()
    assert clean.problems() == [] and (clean.leads, clean.bouncing, clean.welcomed_once) == (4, 2, 4)
    assert (clean.failed_as_told, clean.parked, clean.dead_lettered, clean.sent_after_redrive) == (2, 2, 2, 2)
    assert clean.follow_ups_first == 2 and clean.updates == 8

    assert verdict(v2=v2 + v2[:1]).duplicate_welcomes == 1
    assert verdict(v2=v2[1:]).unwelcomed == 1
    third = next(i for i, h in enumerate(v1) if h.attempt == 3)
    assert verdict(v1=v1[:third] + v1[third + 1:]).failed_as_told == 1  # dead-lettered after 2 attempts
    second = third - 1
    early = replace(v1[second], at=v1[second - 1].at + 0.1)  # attempt 2 only 0.1 s after attempt 1
    assert verdict(v1=[*v1[:second], early, *v1[second + 1:]]).early == 1
    lead = v1[third].lead_id
    update = next(i for i, h in enumerate(v1) if h.lead_id == lead and h.seq == 1)
    hasty = replace(v1[update], at=v1[third].at - 0.5)  # handled while the welcome email was still retrying
    assert verdict(v1=[*v1[:update], hasty, *v1[update + 1:]]).parked == 1
    ok_lead = next(h for h in v1 if h.seq == 0 and h.lead_id not in bouncing)
    flaky = replace(ok_lead, error="timeout", at=-1.0)
    assert verdict(v1=[flaky, *v1]).unexpected_failures == 1
    assert verdict(dead=dead[1:]).dead_lettered == 1
    assert verdict(dead=[replace(dead[0], attempts=2), dead[1]]).dead_lettered == 1
    assert verdict(left=1).dead_letters_left == 1
    swapped = [h for h in v1 if not (h.lead_id == lead and h.seq > 0)]
    swapped += sorted((h for h in v1 if h.lead_id == lead and h.seq > 0), key=lambda h: -h.seq)
    assert verdict(v1=swapped).update_out_of_order == 1
    for broken in (verdict(v2=v2 + v2[:1]), verdict(dead=dead[1:]), verdict(left=1), verdict(v1=swapped)):
        assert broken.problems()
