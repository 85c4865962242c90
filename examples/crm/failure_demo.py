"""The CRM failure story: the email service fails for some leads, their welcome emails
are retried, dead-lettered, and redriven after a fix; every lead is welcomed exactly once.

    python examples/crm/failure_demo.py                       # starts a broker of its own on a temporary directory
    python examples/crm/failure_demo.py --broker HOST:PORT    # or uses a running one

The story, as the demo runs it:

1. Version 1 of the email service has a bug: its mail provider refuses every
   welcome email to an address at ``bounce.example`` (``email_refusing`` in
   ``services.py``).  The email group has a retry policy for ``lead.created``:
   3 attempts, waiting 200 ms then 400 ms.  The notification and analytics
   services run as in ``run_demo.py``, without a policy.
2. The CRM publishes ``--leads`` leads; every ``--bounce-every``-th one has
   its address at bounce.example.
3. Each refused welcome email is nacked with the provider's answer as the
   reason.  The broker delivers it again from the retry tier
   ``lead.created.email.retry.200ms``, then from ``lead.created.email.retry.400ms``,
   and after the third failed attempt copies it, with its provenance, to the
   dead-letter topic ``lead.created.email.dlq``.  The demo prints each failed
   attempt as it happens.  The email group reads in ``key_ordered`` mode:
   while a lead's welcome email is being retried its later events wait, and
   once it is dead-lettered they move on.
4. Once every refused email is a dead letter, it runs ``logstore dlq list``.
5. It deploys the fix: version 1 leaves the group, and version 2, whose mail
   provider works, joins it.
6. It runs ``logstore dlq redrive``: the dead letters go to
   ``lead.created.email.redrive`` with their attempts reset, and version 2
   sends those welcome emails.
7. It checks the outcome and tells the story.

The exit status is 0 when every lead got exactly one successful welcome
email; each refused one failed at attempts 1, 2 and 3 (from the topic, then
the two tiers, never before its wait), was a dead letter with its
provenance, and was sent by version 2 from the redrive; no other delivery
failed; the DLQ is empty at the end; the email service handled every update
once, in each lead's order; and notification and analytics handled every
event exactly once, at its first attempt, in per-lead order.  It is 1
otherwise, or when a wait takes longer than ``--timeout`` seconds.  The two
``logstore`` commands run as subprocesses (``python -m logstore``), as an
operator runs them.  ``--report FILE`` writes what happened as JSON.

Not guaranteed: delivery is at-least-once, so exactly one welcome email per
lead is what a run without crashes shows; a real service would remember
which leads it welcomed.  Records put back by a redrive are outside the
per-key order (docs/groups.md): a bouncing lead's follow-up email goes out
before its welcome email, and the demo counts those.  Against a broker of
your own, the email group keeps its retry policy after the demo (``logstore
groups retry-policy email lead.created --clear`` removes it), and the
redrive also puts back dead letters of earlier runs, which version 2 then
handles (counted as ``earlier``).
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from logstore.client import Admin, DeadLetter, RecordMetadata, RetryPolicy
from logstore.errors import LogstoreError

from leads import BOUNCE_DOMAIN, TOPIC, LeadEvent, generate_events
from publish import DEFAULT_PARTITIONS, ensure_topic, publish
from run_demo import (
    DemoTimeout, ServiceSummary, delivery_lag, demo_broker, done, group_state, handled_json, print_table, ready,
    summarize, wait_until,
)
from services import Handled, Service, email_refusing

__all__ = ["POLICY", "EmailSummary", "summarize_email", "main"]

GROUP = "email"
POLICY = RetryPolicy(max_attempts=3, delays_ms=(200, 400))
_EARLY_SLACK_S = 0.002  # the broker's clock counts whole milliseconds


@dataclass(frozen=True, slots=True)
class EmailSummary:
    """What the email service did with this run's events, across both versions."""

    leads: int  # leads published in this run
    bouncing: int  # of them, with an address at bounce.example
    welcomed_once: int  # leads with exactly one successful welcome email
    duplicate_welcomes: int  # successful welcome emails beyond one per lead
    unwelcomed: int  # leads without a successful welcome email
    failed_as_told: int  # bouncing leads whose welcome failed at attempts 1-3, then went out from the redrive
    unexpected_failures: int  # failed deliveries other than those three per bouncing lead
    early: int  # retries delivered before the policy's wait had passed since the failed attempt
    waits_s: tuple[tuple[float, float], ...]  # (shortest, longest) measured wait before attempt 2, 3, ...
    parked: int  # bouncing leads whose updates were all handled after their welcome email's last failure
    dead_lettered: int  # bouncing leads with a dead letter of their welcome email carrying its provenance
    dead_letters_left: int  # dead letters of the group after the redrive
    sent_after_redrive: int  # welcome emails version 2 sent
    updates: int  # successful handlings of updates
    update_duplicates: int
    update_missing: int
    update_out_of_order: int  # updates handled after a later update of the same lead
    follow_ups_first: int  # bouncing leads whose updates were handled before their welcome email
    earlier: int  # handlings of events from earlier runs

    def problems(self) -> list[str]:
        """What went wrong, one phrase each; empty when the story went as told."""
        checks = [
            (self.welcomed_once == self.leads, f"{self.leads - self.welcomed_once} lead(s) not welcomed exactly once"),
            (self.duplicate_welcomes == 0, f"{self.duplicate_welcomes} duplicate welcome email(s)"),
            (self.unwelcomed == 0, f"{self.unwelcomed} lead(s) never welcomed"),
            (self.failed_as_told == self.bouncing,
             f"{self.bouncing - self.failed_as_told} bouncing lead(s) not failed 3 times then sent from the redrive"),
            (self.unexpected_failures == 0, f"{self.unexpected_failures} unexpected failed delivery(ies)"),
            (self.early == 0, f"{self.early} retry(ies) delivered before their wait"),
            (self.parked == self.bouncing,
             f"{self.bouncing - self.parked} bouncing lead(s) had updates handled during the retries"),
            (self.dead_lettered == self.bouncing,
             f"{self.bouncing - self.dead_lettered} bouncing lead(s) without a dead letter with provenance"),
            (self.dead_letters_left == 0, f"{self.dead_letters_left} dead letter(s) left after the redrive"),
            (self.sent_after_redrive == self.bouncing,
             f"version 2 sent {self.sent_after_redrive} welcome email(s), not {self.bouncing}"),
            (self.update_duplicates == self.update_missing == self.update_out_of_order == 0,
             f"updates: {self.update_duplicates} duplicate(s), {self.update_missing} missing, "
             f"{self.update_out_of_order} out of order"),
        ]
        return [problem for fine, problem in checks if not fine]


def _bouncing(published: Sequence[LeadEvent]) -> set[str]:
    return {e.lead_id for e in published if e.kind == "created" and e.data["email"].endswith("@" + BOUNCE_DOMAIN)}


def summarize_email(
    v1: Sequence[Handled],
    v2: Sequence[Handled],
    published: Sequence[LeadEvent],
    placed: Sequence[RecordMetadata],
    dead_letters: Sequence[DeadLetter],
    dead_letters_left: int,
) -> EmailSummary:
    """Check what the email service's two versions handled, and the dead letters seen
    before the fix, against the events published in this run."""
    where = {(e.lead_id, e.seq): (m.partition, m.offset) for e, m in zip(published, placed)}
    leads = {e.lead_id for e in published}
    bouncing = _bouncing(published)
    versions = [(1, h) for h in v1 if (h.lead_id, h.seq) in where] + [(2, h) for h in v2 if (h.lead_id, h.seq) in where]
    earlier = len(v1) + len(v2) - len(versions)

    welcomes = Counter(h.lead_id for _, h in versions if h.seq == 0 and h.error is None)
    tiers = [f"{TOPIC}.{GROUP}.retry.{d}ms" for d in POLICY.delays_ms]
    told_path = [(1, TOPIC), *((n + 2, tier) for n, tier in enumerate(tiers))][: POLICY.max_attempts]
    failed_as_told = parked = unexpected = early = follow_ups_first = 0
    waits: list[list[float]] = [[] for _ in range(POLICY.max_attempts - 1)]
    by_lead: dict[str, list[tuple[int, Handled]]] = defaultdict(list)
    for version, h in versions:  # in the order each version began handling them
        by_lead[h.lead_id].append((version, h))
    for lead, history in by_lead.items():
        welcome = [(v, h) for v, h in history if h.seq == 0]
        failures = [h for v, h in welcome if h.error is not None]
        unexpected += sum(1 for _, h in history if h.error is not None and h.seq != 0)
        if lead not in bouncing:
            unexpected += len(failures)
            continue
        path = [(h.attempt, h.via) for h in failures]
        sent = [(v, h) for v, h in welcome if h.error is None]
        if (path == told_path and all(v == 1 for v, h in welcome if h.error is not None)
                and [(v, h.attempt, h.via) for v, h in sent] == [(2, 1, f"{TOPIC}.{GROUP}.redrive")]):
            failed_as_told += 1
        else:
            unexpected += max(0, len(failures) - POLICY.max_attempts)
        for n, (before, after) in enumerate(zip(failures, failures[1:])):
            if n < len(waits):
                waits[n].append(after.at - before.at)
                if after.at - before.at < POLICY.delays_ms[min(n, len(POLICY.delays_ms) - 1)] / 1000 - _EARLY_SLACK_S:
                    early += 1
        updates_at = [h.at for _, h in history if h.seq > 0]
        if failures and all(at > failures[-1].at for at in updates_at):
            parked += 1
        if sent and any(at < sent[0][1].at for at in updates_at):
            follow_ups_first += 1

    updates = [h for _, h in versions if h.seq > 0 and h.error is None]
    seen = Counter((h.lead_id, h.seq) for h in updates)
    expected_updates = {key for key in where if key[1] > 0}
    last_seq: dict[str, int] = {}
    out_of_order = 0
    for h in updates:
        if h.seq < last_seq.get(h.lead_id, -1):
            out_of_order += 1
        last_seq[h.lead_id] = max(h.seq, last_seq.get(h.lead_id, -1))

    provenance_ok = set()
    for d in dead_letters:
        lead = d.key.decode("utf-8", errors="replace") if d.key is not None else ""
        if (
            lead in bouncing
            and d.origin_topic == TOPIC
            and (d.origin_partition, d.origin_offset) == where[lead, 0]
            and d.partition == d.origin_partition
            and d.attempts == POLICY.max_attempts
            and BOUNCE_DOMAIN in d.error
            and d.first_failure_ms <= d.dead_lettered_ms
            and LeadEvent.decode(d.value).seq == 0
        ):
            provenance_ok.add(lead)

    return EmailSummary(
        leads=len(leads),
        bouncing=len(bouncing),
        welcomed_once=sum(1 for lead in leads if welcomes[lead] == 1),
        duplicate_welcomes=sum(n - 1 for n in welcomes.values() if n > 1),
        unwelcomed=len(leads - welcomes.keys()),
        failed_as_told=failed_as_told,
        unexpected_failures=unexpected,
        early=early,
        waits_s=tuple((min(w), max(w)) if w else (0.0, 0.0) for w in waits),
        parked=parked,
        dead_lettered=len(provenance_ok),
        dead_letters_left=dead_letters_left,
        sent_after_redrive=sum(1 for v, h in versions if v == 2 and h.seq == 0 and h.error is None),
        updates=len(updates),
        update_duplicates=sum(n - 1 for n in seen.values()),
        update_missing=len(expected_updates - seen.keys()),
        update_out_of_order=out_of_order,
        follow_ups_first=follow_ups_first,
        earlier=earlier,
    )


class _Narrator:
    """Prints whole lines from any thread; ``timed`` lines show the seconds since ``start_clock``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def start_clock(self) -> None:
        self._t0 = time.monotonic()

    def say(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)

    def timed(self, text: str, at: float | None = None) -> None:
        elapsed = (time.monotonic() if at is None else at) - self._t0
        self.say(f"  {elapsed:+7.3f}s  {text}")


def _logstore(narrator: _Narrator, broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``logstore`` command as an operator would, show the command and its output."""
    narrator.say(f"$ logstore {' '.join(args)} --broker {broker}")
    result = subprocess.run(
        [sys.executable, "-m", "logstore", *args, "--broker", broker], capture_output=True, text=True, timeout=60
    )
    for line in (result.stdout + result.stderr).splitlines():
        narrator.say(f"  {line}")
    if result.returncode != 0:
        raise LogstoreError(f"`logstore {' '.join(args)}` exited {result.returncode}")
    return result


def _dead_letters(admin: Admin, topic: str) -> list[DeadLetter]:
    return list(admin.list_dead_letters(GROUP, topic, page_size=1000))


def _email_settled(admin: Admin, email: Service, published: Sequence[LeadEvent], bouncing: set[str], topic: str) -> bool:
    """Version 1 did all it could: every event of this run but the bouncing leads' welcome
    emails handled, those dead-lettered, and nothing left to deliver (tiers included)."""
    expected = {(e.lead_id, e.seq) for e in published} - {(lead, 0) for lead in bouncing}
    with email.lock:
        handled = {(h.lead_id, h.seq) for h in email.handled if h.error is None}
    if not expected <= handled:
        return False
    dead = {d.key.decode() for d in _dead_letters(admin, topic) if d.key is not None}
    return bouncing <= dead and delivery_lag(admin, email) == 0


def _redrive_done(admin: Admin, email: Service, bouncing: set[str], topic: str) -> bool:
    """Version 2 sent every bouncing lead's welcome email, the group has nothing left to
    deliver and the DLQ is empty."""
    with email.lock:
        sent = {h.lead_id for h in email.handled if h.seq == 0 and h.error is None}
    return bouncing <= sent and delivery_lag(admin, email) == 0 and not _dead_letters(admin, topic)


def _dead_letter_json(d: DeadLetter) -> dict[str, object]:
    return {
        "partition": d.partition, "offset": d.offset, "key": None if d.key is None else d.key.decode("utf-8", "replace"),
        "origin_topic": d.origin_topic, "origin_partition": d.origin_partition, "origin_offset": d.origin_offset,
        "attempts": d.attempts, "first_failure_ms": d.first_failure_ms, "error": d.error,
        "dead_lettered_ms": d.dead_lettered_ms,
    }


def run(broker: str, args: argparse.Namespace) -> int:
    """The failure story against ``broker``; returns the exit status."""
    say = _Narrator()
    topic = args.topic
    partition_count = ensure_topic(broker, topic, args.partitions)
    partitions = {(topic, p) for p in range(partition_count)}
    policies = {topic: POLICY}

    def failed_attempt(h: Handled) -> None:
        what = "welcome email" if h.seq == 0 else f"event {h.seq}"
        note = f": {h.error}" if h.attempt == 1 else ": to the DLQ" if h.attempt >= POLICY.max_attempts else ""
        say.timed(f"email v1: {h.lead_id} {what} failed, attempt {h.attempt} of {POLICY.max_attempts} "
                  f"(from {h.via}){note}", h.at)

    email_v1 = Service(GROUP, broker, topic=topic, work=email_refusing(BOUNCE_DOMAIN), retry_policies=policies,
                       on_failure=failed_attempt)
    email_v2 = Service(GROUP, broker, topic=topic, retry_policies=policies,
                       on_action=lambda text: say.timed(f"email v2: {text.split('] ', 1)[-1]}"))
    others = [Service(name, broker, topic=topic) for name in ("notification", "analytics")]
    running: list[Service] = []
    try:
        with Admin(broker) as admin:
            say.say(f"== 1. Email v1 has a bug: its mail provider refuses welcome emails to @{BOUNCE_DOMAIN}")
            for service in (email_v1, *others):
                service.start()
                running.append(service)
            for service in (email_v1, *others):
                wait_until(lambda: ready(admin, service, partitions),
                           f"the {service.name} members to share the partitions", args.timeout,
                           lambda: group_state(admin, service))
            tiers = ", ".join(f"{topic}.{GROUP}.retry.{d}ms" for d in POLICY.delays_ms)
            say.say(f"email's retry policy for {topic} (stored by its join): at most {POLICY.max_attempts} attempts, "
                    f"waiting {' then '.join(f'{d} ms' for d in POLICY.delays_ms)} (tiers {tiers}; "
                    f"DLQ {topic}.{GROUP}.dlq)")
            say.say("services joined: email v1 (1 member), notification (1 member), analytics (2 members)")

            published = generate_events(secrets.token_hex(2), args.leads, args.updates, args.seed, args.bounce_every)
            bouncing = _bouncing(published)
            say.say(f"\n== 2. The CRM publishes; the refused welcome emails are retried with backoff")
            say.start_clock()
            placed = publish(broker, published, topic)
            say.timed(f"published {len(published)} events of {args.leads} leads to {topic}; "
                      f"{len(bouncing)} leads have an address at {BOUNCE_DOMAIN}")
            wait_until(lambda: _email_settled(admin, email_v1, published, bouncing, topic),
                       "email v1 to handle every event it can and dead-letter the refused welcome emails",
                       args.timeout, lambda: group_state(admin, email_v1))
            for service in others:
                wait_until(lambda: done(admin, service, published),
                           f"{service.name} to handle and commit every event", args.timeout,
                           lambda: group_state(admin, service))
            say.timed(f"email v1 is done: {args.leads - len(bouncing)} leads welcomed, {len(bouncing)} welcome "
                      "emails in the DLQ; notification and analytics are done")

            say.say(f"\n== 3. After {POLICY.max_attempts} attempts they are dead letters, with their provenance")
            dead_before = _dead_letters(admin, topic)
            _logstore(say, broker, "dlq", "list", GROUP, topic)

            say.say("\n== 4. The fix is deployed: email v1 leaves the group, email v2 joins it")
            email_v1.stop()
            running.remove(email_v1)
            email_v2.start()
            running.append(email_v2)
            wait_until(lambda: ready(admin, email_v2, partitions), "email v2 to own the partitions", args.timeout,
                       lambda: group_state(admin, email_v2))
            say.timed("email v2 is running, with a working mail provider")

            say.say("\n== 5. The dead letters are redriven")
            redrive = _logstore(say, broker, "dlq", "redrive", GROUP, topic)
            wait_until(lambda: _redrive_done(admin, email_v2, bouncing, topic),
                       "email v2 to send the redriven welcome emails and the DLQ to empty", args.timeout,
                       lambda: group_state(admin, email_v2))
            dead_after = _dead_letters(admin, topic)
    finally:
        for service in running:
            service.stop()

    failures = [f"{s.name}: {exc}" for s in (email_v1, email_v2, *others) for exc in s.failures]
    with email_v1.lock, email_v2.lock:
        v1, v2 = list(email_v1.handled), list(email_v2.handled)
    email = summarize_email(v1, v2, published, placed, dead_before, len(dead_after))
    summaries = [summarize(service, published) for service in others]
    redelivered = {s.name: sum(1 for h in s.handled if h.attempt != 1 or h.via != topic or h.error is not None)
                   for s in others}
    if args.report is not None:
        _write_report(args.report, published, placed, bouncing, dead_before, dead_after, redrive.stdout,
                      email_v1, email_v2, others)
    _tell(email, summaries, redelivered)
    problems = email.problems() + [f"{s.name}: see the table" for s in summaries if not s.ok]
    problems += [f"{name}: {n} delivery(ies) retried or failed" for name, n in redelivered.items() if n]
    problems += failures
    if problems:
        print("\nFAILED: " + "; ".join(problems))
        return 1
    print("\nOK: every lead got exactly one welcome email, the DLQ is empty, and notification and analytics "
          "handled every event exactly once, in per-lead order")
    return 0


def _tell(email: EmailSummary, others: Sequence[ServiceSummary], redelivered: dict[str, int]) -> None:
    policy_waits = [POLICY.delays_ms[min(n, len(POLICY.delays_ms) - 1)] / 1000 for n in range(len(email.waits_s))]
    waits = ", ".join(
        f"before attempt {n + 2} {lo:.3f}-{hi:.3f}s (policy {wait:g}s)"
        for n, ((lo, hi), wait) in enumerate(zip(email.waits_s, policy_waits))
    )
    print("\n== The story")
    print(f"1. Retried with backoff: the welcome emails of {email.failed_as_told} of {email.bouncing} leads at "
          f"{BOUNCE_DOMAIN} failed at attempts 1, 2 and 3, from {TOPIC} and then its retry tiers; waits measured "
          f"{waits}; {email.early} early.  Meanwhile those leads' later events waited until the welcome email was "
          f"dead-lettered ({email.parked} of {email.bouncing} leads).")
    print(f"2. Dead-lettered with provenance: {email.dead_lettered} of {email.bouncing} dead letters named their origin "
          f"({TOPIC}, partition, offset), {POLICY.max_attempts} attempts and the provider's error.")
    print("3. The fix was deployed: email v1 left the group and email v2 joined it.")
    print(f"4. `logstore dlq redrive` delivered them again: email v2 sent {email.sent_after_redrive} welcome emails, "
          f"from {TOPIC}.{GROUP}.redrive at attempt 1; {email.dead_letters_left} dead letters are left.")
    print(f"Welcome emails: {email.welcomed_once} of {email.leads} leads got exactly one "
          f"({email.leads - email.bouncing} at once, {email.sent_after_redrive} after the redrive); "
          f"{email.duplicate_welcomes} duplicates, {email.unwelcomed} leads without one, "
          f"{email.unexpected_failures} unexpected failures."
          + (f"  (Email also handled {email.earlier} events of earlier runs.)" if email.earlier else ""))
    print(f"Updates: email handled {email.updates} once each ({email.update_duplicates} dups, {email.update_missing} "
          f"missing, {email.update_out_of_order} out of order); for {email.follow_ups_first} bouncing leads they came "
          "before the welcome email, as a redrive is outside the per-lead order.")
    print("Unaffected, with no retry policy (retried or failed deliveries: "
          + ", ".join(f"{name} {n}" for name, n in redelivered.items()) + "):\n")
    print_table(others)


def _write_report(
    path: Path, published: Sequence[LeadEvent], placed: Sequence[RecordMetadata], bouncing: set[str],
    dead_before: Sequence[DeadLetter], dead_after: Sequence[DeadLetter], redrive_output: str,
    email_v1: Service, email_v2: Service, others: Sequence[Service],
) -> None:
    services = {s.name: {"members": s.member_count, "handled": handled_json(s)} for s in others}
    services[GROUP] = {
        "members": email_v1.member_count,
        "handled": [{**h, "version": 1} for h in handled_json(email_v1)]
        + [{**h, "version": 2} for h in handled_json(email_v2)],
    }
    report = {
        "policy": {"max_attempts": POLICY.max_attempts, "delays_ms": list(POLICY.delays_ms)},
        "published": [
            {"lead_id": e.lead_id, "seq": e.seq, "partition": m.partition, "offset": m.offset,
             "email": e.data.get("email")}
            for e, m in zip(published, placed)
        ],
        "bouncing": sorted(bouncing),
        "dead_letters_before_fix": [_dead_letter_json(d) for d in dead_before],
        "dead_letters_after_redrive": [_dead_letter_json(d) for d in dead_after],
        "redrive_output": redrive_output,
        "services": services,
    }
    path.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", help="HOST:PORT of a running broker (default: start one for the demo)")
    parser.add_argument("--topic", default=TOPIC, help="the topic (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="partitions of the topic if it must be created (default %(default)s)")
    parser.add_argument("--leads", type=int, default=40, help="leads to publish (default %(default)s)")
    parser.add_argument("--updates", type=int, default=3, help="updates after each lead's creation (default %(default)s)")
    parser.add_argument("--bounce-every", type=int, default=5, metavar="N",
                        help=f"every N-th lead has an address at {BOUNCE_DOMAIN} (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the made-up lead data (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each wait may take (default %(default)s)")
    parser.add_argument("--report", type=Path, help="write what happened to this JSON file")
    args = parser.parse_args(argv)
    if args.bounce_every < 1:
        parser.error("--bounce-every must be at least 1: the story needs leads that fail")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with demo_broker(args.broker) as broker:
            return run(broker, args)
    except (LogstoreError, DemoTimeout) as exc:
        print(f"failure_demo.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("failure_demo.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
