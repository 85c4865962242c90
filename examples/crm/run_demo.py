"""The CRM demo, end to end: one topic, three services, every event checked.

    python examples/crm/run_demo.py                       # starts a broker of its own on a temporary directory
    python examples/crm/run_demo.py --broker HOST:PORT    # or uses a running one

It creates the topic ``lead.created`` (6 partitions) if needed, starts the
``email``, ``notification`` and ``analytics`` services (``services.py``; two
members for analytics), waits until every member owns its share of the
partitions, publishes the events of ``--leads`` leads (``publish.py``), waits
until every service has handled every event and the groups have committed
everything, makes the members leave, and prints one line per service:

* events: how many events of this run the service handled, and from how many
  leads; ``dups`` of them more than once, ``missing`` never;
* out of order: events of a lead handled after a later event of that lead;
* per member: how the events were shared among the group's members.

The exit status is 0 when every service handled every event exactly once, in
each lead's order, and every member got a share; 1 otherwise, or if the wait
took longer than ``--timeout`` seconds.  ``--report FILE`` also writes every
event as published and as handled, as JSON, for tests and tinkering.

Not guaranteed: exactly once is what a run without failures shows; the
guarantee is at-least-once (see ``services.py``).  Against a broker of your
own, groups named email, notification and analytics resume from the
committed offsets of earlier runs; events from earlier runs that they still
had to handle are counted apart, as ``earlier``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from logstore.client import Admin, RecordMetadata
from logstore.errors import LogstoreError
from logstore.server.app import serve

from leads import TOPIC, LeadEvent, generate_events
from publish import DEFAULT_PARTITIONS, ensure_topic, publish
from services import SERVICES, Service

__all__ = [
    "DemoTimeout", "ServiceSummary", "summarize", "demo_broker", "wait_until", "group_state", "ready", "delivery_lag",
    "done", "print_table", "handled_json", "main",
]

_POLL_SECONDS = 0.05


class DemoTimeout(Exception):
    """A wait of the demo took longer than ``--timeout``."""


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """What one service did with the events of this run."""

    name: str
    events: int  # events of this run handled, repeats included
    leads: int  # distinct leads among them
    duplicates: int  # handlings beyond the first of an event
    missing: int  # published events never handled
    out_of_order: int  # events handled after a later event of the same lead
    earlier: int  # events of earlier runs (or records that were not lead events)
    per_member: tuple[int, ...]  # events handled by each member

    @property
    def ok(self) -> bool:
        """Every event exactly once, in per-lead order, and every member got a share."""
        return self.duplicates == self.missing == self.out_of_order == 0 and all(self.per_member)


def summarize(service: Service, published: Sequence[LeadEvent]) -> ServiceSummary:
    """Check what ``service`` handled against the events published in this run."""
    expected = {(event.lead_id, event.seq) for event in published}
    with service.lock:
        handled = list(service.handled)
        skipped = service.skipped
    ours = [h for h in handled if (h.lead_id, h.seq) in expected]
    seen = Counter((h.lead_id, h.seq) for h in ours)
    last_seq: dict[str, int] = {}
    out_of_order = 0
    for h in ours:  # in the order the service began handling them
        if h.seq < last_seq.get(h.lead_id, -1):
            out_of_order += 1
        last_seq[h.lead_id] = max(h.seq, last_seq.get(h.lead_id, -1))
    per_member = Counter(h.member for h in ours)
    return ServiceSummary(
        name=service.name,
        events=len(ours),
        leads=len(last_seq),
        duplicates=sum(n - 1 for n in seen.values()),
        missing=len(expected - seen.keys()),
        out_of_order=out_of_order,
        earlier=len(handled) - len(ours) + skipped,
        per_member=tuple(per_member[m] for m in range(service.member_count)),
    )


@contextmanager
def demo_broker(address: str | None) -> Iterator[str]:
    """``address``, or a broker of our own on a temporary directory for the duration."""
    if address is not None:
        yield address
        return
    with tempfile.TemporaryDirectory(prefix="crm-demo-") as data_dir:
        running = serve(Path(data_dir) / "data", "127.0.0.1:0")
        print(f"started a broker on {running.address} (data in {data_dir})")
        try:
            yield running.address
        finally:
            running.stop()


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float, explain: Callable[[], str] | None = None
) -> None:
    """Poll ``condition`` until it holds; after ``timeout`` seconds raise ``DemoTimeout``,
    naming ``what`` and, if given, the state ``explain`` describes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            detail = f": {explain()}" if explain is not None else ""
            raise DemoTimeout(f"gave up after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(_POLL_SECONDS)


def group_state(admin: Admin, service: Service) -> str:
    """What the broker shows of a service's group, for a timeout message."""
    group = admin.describe_group(service.name)
    members = ", ".join(f"{m.client_id} owns {len(m.assignment)}" for m in group.members)
    hint = (f" (the demo runs {service.member_count}: is another {service.name} service running?)"
            if len(group.members) > service.member_count else "")
    return (f"the broker shows {len(group.members)} member(s) [{members}]{hint} and a lag of "
            f"{delivery_lag(admin, service)}")


def ready(admin: Admin, service: Service, partitions: set[tuple[str, int]]) -> bool:
    """The broker shows every member of the group owning a share of the topic, and the group's
    starting offsets committed: from now on, every event published reaches the group.  (A group
    with a retry policy also owns its retry tiers and redrive topic.)"""
    group = admin.describe_group(service.name)
    owned = [tp for member in group.members for tp in member.assignment]
    committed = {(p.topic, p.partition) for p in group.partitions if p.committed_offset is not None}
    return (
        len(group.members) == service.member_count
        and all(member.assignment for member in group.members)
        and len(owned) == len(set(owned))
        and partitions <= set(owned)
        and partitions <= committed
    )


def delivery_lag(admin: Admin, service: Service) -> int:
    """The records the service's group still has to see done, on the partitions it reads:
    its topic, and with a retry policy its retry tiers and redrive topic.  Not counted: the
    group's dead-letter topic, which the group does not read (``DescribeGroup`` lists its
    partitions once a redrive or purge has stored a cursor there, dead letters as lag)."""
    dlq = f"{service.topic}.{service.name}.dlq"
    return sum(p.lag for p in admin.describe_group(service.name).partitions if p.topic != dlq)


def done(admin: Admin, service: Service, published: Sequence[LeadEvent]) -> bool:
    """The service handled every event of this run and its group has no lag left."""
    expected = {(event.lead_id, event.seq) for event in published}
    with service.lock:
        handled = {(h.lead_id, h.seq) for h in service.handled}
    return expected <= handled and delivery_lag(admin, service) == 0


def print_table(summaries: Sequence[ServiceSummary]) -> None:
    print(f"{'service':<13} {'members':>7} {'events':>7} {'leads':>6} {'dups':>5} {'missing':>8} "
          f"{'out of order':>13} {'earlier':>8}  per member")
    for s in summaries:
        print(f"{s.name:<13} {len(s.per_member):>7} {s.events:>7} {s.leads:>6} {s.duplicates:>5} {s.missing:>8} "
              f"{s.out_of_order:>13} {s.earlier:>8}  {' + '.join(map(str, s.per_member))}")


def _write_report(path: Path, published: Sequence[LeadEvent], placed: Sequence[RecordMetadata],
                  services: Sequence[Service]) -> None:
    report = {
        "published": [
            {"lead_id": e.lead_id, "seq": e.seq, "partition": m.partition, "offset": m.offset}
            for e, m in zip(published, placed)
        ],
        "services": {
            service.name: {
                "members": service.member_count,
                "handled": handled_json(service),
            }
            for service in services
        },
    }
    path.write_text(json.dumps(report, indent=1) + "\n")


def handled_json(service: Service) -> list[dict[str, object]]:
    """What ``service`` handled, in order, as JSON objects (for ``--report``)."""
    with service.lock:
        handled = list(service.handled)
    return [
        {"member": h.member, "lead_id": h.lead_id, "seq": h.seq, "partition": h.partition, "offset": h.offset,
         "attempt": h.attempt, "via": h.via, "error": h.error, "at": h.at}
        for h in handled
    ]


def run(broker: str, args: argparse.Namespace) -> int:
    """The demo against ``broker``; returns the exit status."""
    partition_count = ensure_topic(broker, args.topic, args.partitions)
    partitions = {(args.topic, p) for p in range(partition_count)}
    services = [Service(name, broker, topic=args.topic) for name in SERVICES]
    try:
        with Admin(broker) as admin:
            for service in services:
                service.start()
            for service in services:
                wait_until(lambda: ready(admin, service, partitions),
                           f"the {service.name} members to share the partitions", args.timeout,
                           lambda: group_state(admin, service))
            print(f"services joined: {', '.join(f'{s.name} ({s.member_count} member(s))' for s in services)}")

            published = generate_events(secrets.token_hex(2), args.leads, args.updates, args.seed)
            started = time.monotonic()
            placed = publish(broker, published, args.topic)
            spread = Counter(m.partition for m in placed)
            print(f"published {len(published)} events of {args.leads} leads to {args.topic} "
                  f"({', '.join(f'p{p}: {spread[p]}' for p in range(partition_count))})")

            for service in services:
                wait_until(lambda: done(admin, service, published),
                           f"{service.name} to handle and commit every event", args.timeout,
                           lambda: group_state(admin, service))
            elapsed = time.monotonic() - started
    finally:
        for service in services:
            service.stop()

    failures = [f"{s.name}: {exc}" for s in services for exc in s.failures]
    if args.report is not None:
        _write_report(args.report, published, placed, services)
    summaries = [summarize(service, published) for service in services]
    print(f"every group handled and committed every event in {elapsed:.2f}s\n")
    print_table(summaries)
    if failures or not all(s.ok for s in summaries):
        print("\nFAILED: " + ("; ".join(failures) or "see the table"))
        return 1
    print("\nOK: each service handled every event exactly once, in per-lead order; both analytics members had a share")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="HOST:PORT of a running broker (default: start one for the demo)")
    parser.add_argument("--topic", default=TOPIC, help="the topic (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="partitions of the topic if it must be created (default %(default)s)")
    parser.add_argument("--leads", type=int, default=200, help="leads to publish (default %(default)s)")
    parser.add_argument("--updates", type=int, default=3, help="updates after each lead's creation (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the made-up lead data (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each wait may take (default %(default)s)")
    parser.add_argument("--report", type=Path, help="write the published and handled events to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with demo_broker(args.broker) as broker:
            return run(broker, args)
    except (LogstoreError, DemoTimeout) as exc:
        print(f"run_demo.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the services have left their groups and our broker has stopped
        print("run_demo.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
