"""The CRM's downstream services, each a consumer group of its own on ``lead.created``.

* ``email`` (1 member): a welcome email when a lead is created, a follow-up
  when it is qualified.
* ``notification`` (1 member): tells the sales team about every change.
* ``analytics`` (2 members): counts leads by source and by stage; its two
  members share the topic's partitions.

Every group receives every event (fan-out): the groups do not see each other.
Within a group the broker gives each partition to one member at a time, so
each event reaches one member of the group.

Each member is a ``Consumer`` in ``key_ordered`` mode, run with
``Consumer.run(handler, workers=4)``: events of different leads are handled in
parallel, while the events of one lead are handled one at a time and in order
(the broker never has two events of one key in flight, and the worker pool
never runs two of one key at once).  A handler that returns acks its event;
one that raises nacks it, and the event comes back (attempt + 1).  A record
that is not a lead event is logged and acked, so it cannot come back forever.

Run one service on its own (a broker must be running; see README.md)::

    python examples/crm/services.py email
    python examples/crm/services.py analytics --members 2   # or start it twice, one member each

It prints what it does, one line per action, until Ctrl-C (or SIGTERM) makes
its members leave the group.

Not guaranteed: delivery is at-least-once.  A member that dies after handling
an event but before its ack reaches the broker has that event handled again
by the member that takes the partition over, so real handlers must tolerate a
repeat (e.g. remember the last ``seq`` done per lead).  The handlers here only
print and count.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from logstore.client import Consumer, ConsumerMessage
from logstore.errors import LogstoreError

from leads import TOPIC, LeadEvent, NotALeadEvent

__all__ = ["SERVICES", "Handled", "Service", "main"]

_LOGGER = logging.getLogger(__name__)

WORKERS_PER_MEMBER = 4


def _email(event: LeadEvent, _tally: Counter[str]) -> str | None:
    if event.kind == "created":
        return f"welcome email to {event.data['email']} ({event.lead_id})"
    if event.data.get("stage") == "qualified":
        return f"follow-up email for {event.lead_id}: qualified"
    return None


def _notification(event: LeadEvent, _tally: Counter[str]) -> str:
    if event.kind == "created":
        return f"notify sales: new lead {event.lead_id} from {event.data['company']} via {event.data['source']}"
    changes = ", ".join(f"{name}={value}" for name, value in sorted(event.data.items()))
    return f"notify sales: {event.lead_id} now {changes}"


def _analytics(event: LeadEvent, tally: Counter[str]) -> None:
    if event.kind == "created":
        tally[f"source:{event.data['source']}"] += 1
    elif "stage" in event.data:
        tally[f"stage:{event.data['stage']}"] += 1
    return None


# Each service: (its members when run by the demo, what it does with one event).
# The work function gets the event and the service's tally (guarded by the
# service's lock) and returns what it did, for the log, or None.
SERVICES: dict[str, tuple[int, Callable[[LeadEvent, Counter[str]], str | None]]] = {
    "email": (1, _email),
    "notification": (1, _notification),
    "analytics": (2, _analytics),
}


@dataclass(frozen=True, slots=True)
class Handled:
    """One event as a member of a service handled it."""

    member: int
    lead_id: str
    seq: int
    partition: int
    offset: int
    attempt: int


class Service:
    """One service: ``members`` consumers of the group ``name``, each run by
    ``Consumer.run`` on a thread of its own.

    ``handled`` lists the events in the order the members began handling them
    (per lead, that is the order they were handled in); ``tally`` holds the
    service's counters.  Both are guarded by ``lock``.  ``on_action`` gets each
    action's description, from the worker threads of every member at once;
    ``on_member_exit`` is called when a member stops,
    whether by ``stop()`` or because its stream failed (see ``failures``).
    """

    def __init__(
        self,
        name: str,
        broker: str,
        *,
        members: int | None = None,
        topic: str = TOPIC,
        start: str = "latest",
        on_action: Callable[[str], None] | None = None,
        on_member_exit: Callable[[], None] | None = None,
    ) -> None:
        default_members, self._work = SERVICES[name]
        self.name = name
        self.member_count = default_members if members is None else members
        self._broker = broker
        self._topic = topic
        self._start = start
        self._on_action = on_action
        self._on_member_exit = on_member_exit
        self.lock = threading.Lock()
        self.handled: list[Handled] = []
        self.tally: Counter[str] = Counter()
        self.skipped = 0  # records that were not lead events
        self.failures: list[LogstoreError] = []
        self.consumers: list[Consumer] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Join the group with every member; returns once each has joined (the
        constructor of ``Consumer`` waits for the broker's answer)."""
        for member in range(self.member_count):
            consumer = Consumer(
                self._broker,
                group=self.name,
                topics=[self._topic],
                delivery_mode="key_ordered",
                start=self._start,
                client_id=f"crm-{self.name}-{member}",
            )
            self.consumers.append(consumer)
            thread = threading.Thread(target=self._run_member, args=(member, consumer), name=f"{self.name}-{member}")
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Make every member flush its acks and leave the group, and wait for them."""
        for consumer in self.consumers:
            consumer.close()
        for thread in self._threads:
            thread.join()

    def _run_member(self, member: int, consumer: Consumer) -> None:
        try:
            consumer.run(partial(self._handle, member), workers=WORKERS_PER_MEMBER)
        except LogstoreError as exc:
            _LOGGER.error("%s member %d stopped: %s", self.name, member, exc)
            with self.lock:
                self.failures.append(exc)
        finally:
            if self._on_member_exit is not None:
                self._on_member_exit()

    def _handle(self, member: int, message: ConsumerMessage) -> None:
        try:
            event = LeadEvent.decode(message.value)
        except NotALeadEvent as exc:
            _LOGGER.warning("%s: skipping %s/%d@%d: %s", self.name, message.topic, message.partition, message.offset, exc)
            with self.lock:
                self.skipped += 1
            return
        handled = Handled(member, event.lead_id, event.seq, message.partition, message.offset, message.attempt)
        with self.lock:
            self.handled.append(handled)
            action = self._work(event, self.tally)
        if action is not None and self._on_action is not None:
            self._on_action(f"[{self.name}/{member}] {action}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(SERVICES), help="the service to run")
    parser.add_argument("--members", type=int, help="members to run in this process (default: 2 for analytics, else 1)")
    parser.add_argument("--broker", default="127.0.0.1:50051", help="HOST:PORT of the broker (default %(default)s)")
    parser.add_argument("--topic", default=TOPIC, help="the topic (default %(default)s)")
    parser.add_argument("--start", choices=("earliest", "latest"), default="latest",
                        help="where a new group begins (default %(default)s); a group resumes at its committed offsets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    wake = threading.Event()  # set by Ctrl-C, SIGTERM or a member that stopped on its own
    print_lock = threading.Lock()  # print() writes the line and its end separately: keep threads' lines whole

    def report(action: str) -> None:
        with print_lock:
            print(action, flush=True)

    signal.signal(signal.SIGINT, lambda *_: wake.set())
    signal.signal(signal.SIGTERM, lambda *_: wake.set())
    service = Service(
        args.service, args.broker, members=args.members, topic=args.topic, start=args.start,
        on_action=report, on_member_exit=wake.set,
    )
    try:
        service.start()
    except LogstoreError as exc:
        print(f"services.py: cannot join group {args.service}: {type(exc).__name__}: {exc}", file=sys.stderr)
        service.stop()
        return 1
    print(f"{args.service}: {service.member_count} member(s) joined; Ctrl-C leaves the group", file=sys.stderr)
    wake.wait()
    service.stop()
    print(f"{args.service}: handled {len(service.handled)} events, skipped {service.skipped}", file=sys.stderr)
    if service.tally:
        print(f"{args.service}: " + ", ".join(f"{name} {n}" for name, n in sorted(service.tally.items())), file=sys.stderr)
    return 1 if service.failures else 0


if __name__ == "__main__":
    sys.exit(main())
