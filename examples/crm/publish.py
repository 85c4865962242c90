"""The CRM side: publishes lead events to ``lead.created``, keyed by lead id.

Run on its own (a broker must be running; see README.md)::

    python examples/crm/publish.py --leads 100 --updates 3

It creates the topic if it does not exist, publishes the events of
``--leads`` new leads (see ``leads.py``) and prints where they went.
``--bounce-every N`` gives every N-th lead an address at ``bounce.example``,
which the email service can be told to fail on (the failure story, README.md).

Keying every event by its lead id is what keeps a lead's events in order: the
producer hashes the key to choose the partition, so all events of one lead go
to one partition, where they are appended in the order they were sent.  The
producer waits for each record to be durable (``acks="durable"``).

Not guaranteed: a publish that fails midway leaves the events before the
failure published; running it again publishes new leads (a new run tag),
never the same ones twice.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections import Counter
from collections.abc import Sequence

from logstore.client import Admin, Producer, RecordMetadata
from logstore.errors import AlreadyExists, LogstoreError

from leads import TOPIC, LeadEvent, generate_events

__all__ = ["ensure_topic", "publish", "main"]

DEFAULT_PARTITIONS = 6


def ensure_topic(broker: str, topic: str = TOPIC, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Create ``topic`` with ``partitions`` partitions unless it exists; returns its partition count."""
    with Admin(broker) as admin:
        try:
            return admin.create_topic(topic, partitions).partition_count
        except AlreadyExists:
            return admin.describe_topic(topic).partition_count


def publish(broker: str, events: Sequence[LeadEvent], topic: str = TOPIC) -> list[RecordMetadata]:
    """Publish ``events`` in order, each keyed by its lead id; returns where each one was appended."""
    with Producer(broker, acks="durable") as producer:
        futures = [
            producer.send(topic, value=event.encode(), key=event.lead_id, headers={"event": event.kind})
            for event in events
        ]
        return [future.result() for future in futures]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:50051", help="HOST:PORT of the broker (default %(default)s)")
    parser.add_argument("--topic", default=TOPIC, help="the topic (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="partitions of the topic if it must be created (default %(default)s)")
    parser.add_argument("--leads", type=int, default=100, help="new leads to publish (default %(default)s)")
    parser.add_argument("--updates", type=int, default=3, help="updates after each lead's creation (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the made-up lead data (default %(default)s)")
    parser.add_argument("--bounce-every", type=int, default=0, metavar="N",
                        help="give every N-th lead an address at bounce.example (default: none)")
    args = parser.parse_args(argv)

    try:
        partition_count = ensure_topic(args.broker, args.topic, args.partitions)
        events = generate_events(secrets.token_hex(2), args.leads, args.updates, args.seed, args.bounce_every)
        placed = publish(args.broker, events, args.topic)
    except LogstoreError as exc:
        print(f"publish.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    per_partition = Counter(meta.partition for meta in placed)
    spread = ", ".join(f"p{p}: {per_partition[p]}" for p in range(partition_count))
    print(f"published {len(placed)} events of {args.leads} leads to {args.topic} ({spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
