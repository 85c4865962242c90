"""The CRM's lead events: what the CRM publishes and what its services read.

Every lead has a short history of events on the topic ``lead.created``, all
keyed by the lead id, so they land on one partition in publish order:

* ``seq`` 0, ``"created"``: the lead's name, email, company and source;
* ``seq`` 1, 2, ...: ``"updated"``, with the fields that changed (its stage).

A record's value is the event as a JSON object (UTF-8), and its ``event``
header repeats the kind so a consumer can route without parsing the value::

    {"lead_id": "lead-3f2a-0007", "seq": 1, "kind": "updated", "data": {"stage": "contacted"}}

``seq`` numbers one lead's events from 0, so any consumer can check that it
saw them in order.  For the failure story (``failure_demo.py``) the generator
can give every n-th lead an address at ``bounce.example`` (``BOUNCE_DOMAIN``),
a domain the email service's mail provider refuses until its fix is deployed.
Lead ids carry a run tag (``lead-<tag>-<n>``) to tell the leads of one demo
run from those of earlier runs on the same broker.

Not guaranteed here: lead ids are unique only as long as run tags are; the
events are made up (names, companies and stages come from small fixed lists).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TOPIC", "BOUNCE_DOMAIN", "LeadEvent", "NotALeadEvent", "generate_events"]

TOPIC = "lead.created"
BOUNCE_DOMAIN = "bounce.example"

_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances", "Donald", "Radia", "Tim")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Allen", "Knuth", "Perlman", "Berners")
_COMPANIES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
_SOURCES = ("web", "referral", "event", "ads")
_STAGES = ("contacted", "qualified", "proposal", "won")


class NotALeadEvent(ValueError):
    """A record whose value is not a lead event (not JSON, or missing fields)."""


@dataclass(frozen=True, slots=True)
class LeadEvent:
    """One event in a lead's history; ``seq`` counts the lead's events from 0."""

    lead_id: str
    seq: int
    kind: str  # "created" for seq 0, else "updated"
    data: Mapping[str, str]  # created: name, email, company, source; updated: the changed fields

    def encode(self) -> bytes:
        """The record value: the event as compact JSON, UTF-8."""
        body = {"lead_id": self.lead_id, "seq": self.seq, "kind": self.kind, "data": dict(self.data)}
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, value: bytes | None) -> LeadEvent:
        """The event in a record value; raises ``NotALeadEvent`` for anything else."""
        shown = value if value is None else value[:80]
        try:
            body = json.loads(value.decode("utf-8"))
            event = cls(body["lead_id"], body["seq"], body["kind"], body["data"])
        except (AttributeError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise NotALeadEvent(f"not a lead event ({type(exc).__name__}): {shown!r}") from None
        if not (isinstance(event.lead_id, str) and isinstance(event.seq, int) and isinstance(event.data, dict)):
            raise NotALeadEvent(f"not a lead event (a field has the wrong type): {shown!r}")
        return event


def generate_events(
    run_tag: str, lead_count: int, updates_per_lead: int, seed: int = 0, bounce_every: int = 0
) -> list[LeadEvent]:
    """The events of ``lead_count`` leads, each created then updated ``updates_per_lead``
    times, in publish order: the histories of different leads interleave at random
    (reproducibly, from ``seed``), while each lead's own events stay in ``seq`` order.
    With ``bounce_every`` n > 0, leads 0, n, 2n, ... have their address at
    ``BOUNCE_DOMAIN`` instead of their company's domain (nothing else changes)."""
    rng = random.Random(seed)
    histories: list[list[LeadEvent]] = []
    for n in range(lead_count):
        lead_id = f"lead-{run_tag}-{n:04d}"
        first, last, company = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES), rng.choice(_COMPANIES)
        created = {
            "name": f"{first} {last}",
            "email": f"{first}.{last}@{company}.example".lower(),
            "company": company,
            "source": rng.choice(_SOURCES),
        }
        if bounce_every > 0 and n % bounce_every == 0:
            created["email"] = f"{first}.{last}@{BOUNCE_DOMAIN}".lower()
        history = [LeadEvent(lead_id, 0, "created", created)]
        for seq in range(1, updates_per_lead + 1):
            stage = _STAGES[min(seq - 1, len(_STAGES) - 1)]
            history.append(LeadEvent(lead_id, seq, "updated", {"stage": stage}))
        histories.append(history[::-1])  # reversed, so pop() yields seq 0 first
    events: list[LeadEvent] = []
    pending = histories
    while pending:
        i = rng.randrange(len(pending))
        events.append(pending[i].pop())
        if not pending[i]:  # this lead is done: move the last history into its slot
            pending[i] = pending[-1]
            pending.pop()
    return events
