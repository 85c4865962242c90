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

Failures.  A service's work may raise ``ActionFailed``: the member nacks the
event with the exception's message as the reason.  Without a retry policy
the broker delivers it again at once; with one (``Service(retry_policies=...)``,
or ``logstore groups retry-policy``) it comes back from a retry tier after the
policy's wait, and goes to the group's dead-letter topic after its last
attempt, the reason kept as ``logstore.error``.  ``--refuse-domain`` runs the
email service with the bug of the failure story (``failure_demo.py``): its
mail provider refuses welcome emails to that domain.

Run one service on its own (a broker must be running; see README.md)::

    python examples/crm/services.py email
    python examples/crm/services.py analytics --members 2   # or start it twice, one member each
    python examples/crm/services.py email --refuse-domain bounce.example   # with the failure story's bug

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
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from logstore.client import Consumer, ConsumerMessage, RetryPolicy
from logstore.errors import LogstoreError

from leads import TOPIC, LeadEvent, NotALeadEvent

__all__ = ["SERVICES", "ActionFailed", "Handled", "Service", "Work", "email_refusing", "main"]

_LOGGER = logging.getLogger(__name__)

WORKERS_PER_MEMBER = 4

# What a service does with one event: gets the event and the service's tally
# (guarded by the service's lock) and returns what it did, for the log, or None.
Work = Callable[[LeadEvent, Counter[str]], str | None]


class ActionFailed(Exception):
    """A service could not do its action for an event; the event is nacked with this message as the reason."""


def _email(event: LeadEvent, _tally: Counter[str]) -> str | None:
    if event.kind == "created":
        return f"welcome email to {event.data['email']} ({event.lead_id})"
    if event.data.get("stage") == "qualified":
        return f"follow-up email for {event.lead_id}: qualified"
    return None


def email_refusing(domain: str) -> Work:
    """The email service with a broken mail provider (the bug of the failure story):
    a welcome email to an address at ``domain`` raises ``ActionFailed``; everything
    else is as in the fixed service."""
    suffix = "@" + domain

    def work(event: LeadEvent, tally: Counter[str]) -> str | None:
        if event.kind == "created" and event.data["email"].endswith(suffix):
            raise ActionFailed(f"mail provider: 554 5.7.1 <{event.data['email']}>: relay access denied")
        return _email(event, tally)

    return work


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
SERVICES: dict[str, tuple[int, Work]] = {
    "email": (1, _email),
    "notification": (1, _notification),
    "analytics": (2, _analytics),
}


@dataclass(frozen=True, slots=True)
class Handled:
    """One delivery of an event to a member of a service, and how handling it went.

    ``partition`` and ``offset`` are the event's place in the topic it was
    published to (for a delivery from a retry tier or a redrive, read from its
    ``logstore.origin.*`` headers); ``via`` is the topic it was delivered from.
    ``error`` is None when the action succeeded (the event was acked), else the
    reason it was nacked with.  ``at`` is ``time.monotonic()`` when handling began.
    """

    member: int
    lead_id: str
    seq: int
    partition: int
    offset: int
    attempt: int
    via: str = TOPIC
    error: str | None = None
    at: float = 0.0


def _origin(message: ConsumerMessage) -> tuple[int, int]:
    """(partition, offset) where the message's record was published: its own place,
    or for a copy in a retry tier or redrive topic, the one its provenance names."""
    headers = dict(message.headers)
    partition, offset = headers.get("logstore.origin.partition"), headers.get("logstore.origin.offset")
    if partition is None or offset is None:
        return message.partition, message.offset
    return int(partition), int(offset)


class Service:
    """One service: ``members`` consumers of the group ``name``, each run by
    ``Consumer.run`` on a thread of its own.

    ``handled`` lists the deliveries in the order the members began handling
    them (per lead, that is the order they were handled in), failed ones
    included (``Handled.error``); ``tally`` holds the service's counters.
    Both are guarded by ``lock``.  ``on_action`` gets each
    action's description, from the worker threads of every member at once, and
    ``on_failure`` each delivery whose action raised ``ActionFailed`` (after it
    was recorded, before its nack); ``on_member_exit`` is called when a member
    stops, whether by ``stop()`` or because its stream failed (see ``failures``).
    ``work`` replaces what the service does with an event (``email_refusing``);
    ``retry_policies`` are stored for the group when its members join.
    """

    def __init__(
        self,
        name: str,
        broker: str,
        *,
        members: int | None = None,
        topic: str = TOPIC,
        start: str = "latest",
        work: Work | None = None,
        retry_policies: Mapping[str, RetryPolicy] | None = None,
        on_action: Callable[[str], None] | None = None,
        on_failure: Callable[[Handled], None] | None = None,
        on_member_exit: Callable[[], None] | None = None,
    ) -> None:
        default_members, default_work = SERVICES[name]
        self._work = default_work if work is None else work
        self._retry_policies = retry_policies
        self.name = name
        self.member_count = default_members if members is None else members
        self._broker = broker
        self.topic = topic
        self._start = start
        self._on_action = on_action
        self._on_failure = on_failure
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
                topics=[self.topic],
                delivery_mode="key_ordered",
                start=self._start,
                client_id=f"crm-{self.name}-{member}",
                retry_policies=self._retry_policies,
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
        partition, offset = _origin(message)
        attempt, via = message.attempt, message.topic
        with self.lock:
            at = time.monotonic()
            try:
                action = self._work(event, self.tally)
            except ActionFailed as exc:
                failed = Handled(member, event.lead_id, event.seq, partition, offset, attempt, via, str(exc), at)
                self.handled.append(failed)
            else:
                failed = None
                self.handled.append(Handled(member, event.lead_id, event.seq, partition, offset, attempt, via, None, at))
        if failed is not None:
            if self._on_failure is not None:
                self._on_failure(failed)
            message.nack(failed.error or "")
            return
        if action is not None and self._on_action is not None:
            redelivered = f" (attempt {attempt}, from {via})" if attempt > 1 or via != self.topic else ""
            self._on_action(f"[{self.name}/{member}] {action}{redelivered}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", choices=sorted(SERVICES), help="the service to run")
    parser.add_argument("--members", type=int, help="members to run in this process (default: 2 for analytics, else 1)")
    parser.add_argument("--broker", default="127.0.0.1:50051", help="HOST:PORT of the broker (default %(default)s)")
    parser.add_argument("--topic", default=TOPIC, help="the topic (default %(default)s)")
    parser.add_argument("--start", choices=("earliest", "latest"), default="latest",
                        help="where a new group begins (default %(default)s); a group resumes at its committed offsets")
    parser.add_argument("--refuse-domain", metavar="DOMAIN",
                        help="email only: the mail provider refuses welcome emails to DOMAIN (the failure story's bug)")
    args = parser.parse_args(argv)
    if args.refuse_domain is not None and args.service != "email":
        parser.error("--refuse-domain is for the email service")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    wake = threading.Event()  # set by Ctrl-C, SIGTERM or a member that stopped on its own
    print_lock = threading.Lock()  # print() writes the line and its end separately: keep threads' lines whole

    def report(action: str) -> None:
        with print_lock:
            print(action, flush=True)

    signal.signal(signal.SIGINT, lambda *_: wake.set())
    signal.signal(signal.SIGTERM, lambda *_: wake.set())

    def report_failure(failed: Handled) -> None:
        report(f"[{args.service}/{failed.member}] {failed.lead_id} seq {failed.seq}: attempt {failed.attempt} "
               f"from {failed.via} failed: {failed.error}")

    service = Service(
        args.service, args.broker, members=args.members, topic=args.topic, start=args.start,
        work=None if args.refuse_domain is None else email_refusing(args.refuse_domain),
        on_action=report, on_failure=report_failure, on_member_exit=wake.set,
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
    failed = sum(h.error is not None for h in service.handled)
    print(f"{args.service}: handled {len(service.handled) - failed} events, skipped {service.skipped}"
          + (f", {failed} failed attempt(s)" if failed else ""), file=sys.stderr)
    if service.tally:
        print(f"{args.service}: " + ", ".join(f"{name} {n}" for name, n in sorted(service.tally.items())), file=sys.stderr)
    return 1 if service.failures else 0


if __name__ == "__main__":
    sys.exit(main())
