"""Authorization: what each principal may do, and what each RPC needs.

A principal holds *grants*: fnmatch-style glob patterns (``*``, ``?``,
``[...]``, matched case-sensitively against the whole name) over topic
names and over group names, each with a set of permissions:

- on topics: ``produce``, ``consume``, ``admin``;
- on groups: ``consume``, ``admin``.

``RULES`` maps every RPC of ``logstore.v1.Log``, ``logstore.v1.Admin`` and
``logstore.v1.Groups`` to a function from its request message to the
``Need`` s it has: an acceptable set of permissions on one resource.  A call
is allowed when every need is met (docs/security.md has the table).
``describe`` below means "any permission" on the resource.

Two kinds of topic are special:

- Internal topics (``__*``): no grant lets a client produce to them or
  administer them (create, delete, add partitions), whatever the pattern;
  a grant may still let a principal describe or list them.
- A group's derived topics, named ``<topic>.<group>.retry.<ms>ms``,
  ``<topic>.<group>.dlq``, ``<topic>.<group>.redrive`` and
  ``<topic>.<group>.delay`` (``logstore.broker.retry``), follow the group:
  to consume one a principal needs ``consume`` or ``admin`` on the group and
  ``consume`` on ``<topic>``; to produce to one, ``admin`` on the group and
  ``produce`` on ``<topic>``; to administer one, ``admin`` on both.  Glob
  patterns never reach a derived topic by its own name (``orders*`` does
  not grant ``orders.email.dlq``); a grant whose pattern is the literal
  name (no glob characters) does.

What this module does NOT do: it knows names only, not which topics or
groups exist.  Because ``.`` is legal in names, ``a.b.c.dlq`` may belong to
(topic ``a``, group ``b.c``) or to (topic ``a.b``, group ``c``); access is
granted if either reading grants it (the broker lets only one such pair
own a prefix).  Any name of a derived shape is treated as derived, even an
ordinary topic that happens to be called ``x.y.dlq``; grant such a topic by
its literal name.  It does not authenticate (``logstore.server.auth``), and
it filters list answers only where the interceptor does (ListTopics,
ListGroups).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable

from logstore.broker.names import INTERNAL_PREFIX
from logstore.errors import InvalidArgument, PermissionDenied

__all__ = [
    "PRODUCE",
    "CONSUME",
    "ADMIN",
    "DESCRIBE",
    "TOPIC_PERMISSIONS",
    "GROUP_PERMISSIONS",
    "Grant",
    "Grants",
    "Need",
    "RULES",
    "UNCHECKED",
    "AUTHENTICATED_ONLY",
    "derived_owners",
    "visible_topic",
    "visible_group",
    "requirements",
    "check",
]

PRODUCE = "produce"
CONSUME = "consume"
ADMIN = "admin"
TOPIC_PERMISSIONS = frozenset({PRODUCE, CONSUME, ADMIN})
GROUP_PERMISSIONS = frozenset({CONSUME, ADMIN})
DESCRIBE = TOPIC_PERMISSIONS
"""A need met by any permission on the resource."""

_GLOB_CHARS = frozenset("*?[")
_DERIVED_RE = re.compile(r"^(?P<prefix>.+)\.(?:dlq|redrive|delay|retry\.\d+ms)$")

TOPIC = "topic"
GROUP = "group"
SOME_TOPIC = "some topic"


@dataclass(frozen=True, slots=True)
class Grant:
    """Permissions on the names one glob pattern matches."""

    pattern: str
    permissions: frozenset[str]

    @property
    def literal(self) -> bool:
        """True if the pattern has no glob character: it names exactly one resource."""
        return not _GLOB_CHARS.intersection(self.pattern)

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.pattern)


def _parse_grants(where: str, table: Any, allowed: frozenset[str]) -> tuple[Grant, ...]:
    if not isinstance(table, dict):
        raise InvalidArgument(f"{where} must be a table of \"pattern\" = [permissions]")
    grants = []
    for pattern, permissions in table.items():
        if not isinstance(pattern, str) or not pattern:
            raise InvalidArgument(f"{where}: a pattern must be a non-empty string, got {pattern!r}")
        if isinstance(permissions, str):
            permissions = [permissions]
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise InvalidArgument(f"{where}.{pattern!r} must be a list of permissions, got {permissions!r}")
        unknown = sorted(set(permissions) - allowed)
        if unknown:
            raise InvalidArgument(
                f"{where}.{pattern!r}: unknown permission(s) {unknown}; allowed here: {sorted(allowed)}"
            )
        grants.append(Grant(pattern, frozenset(permissions)))
    return tuple(grants)


@dataclass(frozen=True, slots=True)
class Grants:
    """Everything one principal may do."""

    topics: tuple[Grant, ...] = ()
    groups: tuple[Grant, ...] = ()

    @classmethod
    def from_toml(cls, where: str, topics: Any = None, groups: Any = None) -> "Grants":
        """Grants from a principal's ``topics`` and ``groups`` tables (``{pattern: [permissions]}``)."""
        return cls(
            _parse_grants(f"{where}.topics", topics or {}, TOPIC_PERMISSIONS),
            _parse_grants(f"{where}.groups", groups or {}, GROUP_PERMISSIONS),
        )

    # -- groups --------------------------------------------------------------------------

    def group_allows(self, any_of: frozenset[str], group: str) -> bool:
        """True if some grant matching ``group`` holds one of ``any_of``."""
        return any(g.permissions & any_of and g.matches(group) for g in self.groups)

    # -- topics --------------------------------------------------------------------------

    def _glob_topic_allows(self, any_of: frozenset[str], topic: str) -> bool:
        if topic.startswith(INTERNAL_PREFIX):
            any_of = any_of - {PRODUCE, ADMIN}
        return any(g.permissions & any_of and g.matches(topic) for g in self.topics)

    def topic_allows(self, any_of: frozenset[str], topic: str) -> bool:
        """True if the principal holds one of ``any_of`` on ``topic`` (see the module docstring)."""
        owners = derived_owners(topic)
        if not owners:
            return self._glob_topic_allows(any_of, topic)
        if topic.startswith(INTERNAL_PREFIX):
            any_of = any_of - {PRODUCE, ADMIN}
        if any(g.literal and g.permissions & any_of and g.pattern == topic for g in self.topics):
            return True
        for origin, group in owners:
            for permission in any_of:
                if self.group_allows(_GROUP_NEED_FOR_DERIVED[permission], group) and self._glob_topic_allows(
                    frozenset({permission}), origin
                ):
                    return True
        return False

    def produces_somewhere(self) -> bool:
        """True if some topic grant holds ``produce``."""
        return any(PRODUCE in g.permissions for g in self.topics)

    def allows(self, need: "Need") -> bool:
        if need.kind == TOPIC:
            return self.topic_allows(need.any_of, need.name)
        if need.kind == GROUP:
            return self.group_allows(need.any_of, need.name)
        return self.produces_somewhere()


_GROUP_NEED_FOR_DERIVED = {
    CONSUME: frozenset({CONSUME, ADMIN}),
    PRODUCE: frozenset({ADMIN}),
    ADMIN: frozenset({ADMIN}),
}


def derived_owners(topic: str) -> list[tuple[str, str]]:
    """The ``(topic, group)`` pairs whose derived topic ``topic`` could be; [] for an ordinary name."""
    found = _DERIVED_RE.match(topic)
    if found is None:
        return []
    prefix = found.group("prefix")
    return [
        (prefix[:i], prefix[i + 1 :])
        for i, ch in enumerate(prefix)
        if ch == "." and 0 < i < len(prefix) - 1
    ]


@dataclass(frozen=True, slots=True)
class Need:
    """One of ``any_of`` on the topic or group ``name`` (kind ``"topic"``, ``"group"``,
    or ``"some topic"``: produce on any topic pattern)."""

    any_of: frozenset[str]
    kind: str
    name: str = ""

    def describe(self) -> str:
        """E.g. ``produce on topic 'orders'``, for error messages."""
        if self.kind == SOME_TOPIC:
            return "produce on at least one topic"
        perms = sorted(self.any_of)
        what = "any permission" if self.any_of == DESCRIBE else " or ".join(perms)
        return f"{what} on {self.kind} {self.name!r}"


def _topic(any_of: frozenset[str], name: str) -> Need:
    return Need(any_of, TOPIC, name)


def _group(any_of: frozenset[str], name: str) -> Need:
    return Need(any_of, GROUP, name)


_P = frozenset({PRODUCE})
_C = frozenset({CONSUME})
_A = frozenset({ADMIN})
_CA = frozenset({CONSUME, ADMIN})

Rule = Callable[[Any], Iterable[Need]]


def _offset_topics(*lists: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for offsets in lists:
        for o in offsets:
            seen.setdefault(o.topic, None)
    return list(seen)


def _consume(request: Any) -> list[Need]:
    """Consume: checked on the join (the first message; later joins are refused by the servicer)."""
    if not request.HasField("join"):
        return []
    join = request.join
    needs = [_group(_C, join.group)] + [_topic(_C, t) for t in join.topics]
    if len(join.retry_policies):
        needs.append(_group(_A, join.group))
        needs += [_topic(_C, p.topic) for p in join.retry_policies]
    return needs


def _produce_and_commit(request: Any) -> list[Need]:
    return (
        [_topic(_P, request.produce.topic), _group(_C, request.group)]
        + [_topic(_C, t) for t in _offset_topics(request.offsets, request.if_committed)]
    )


RULES: dict[str, Rule] = {
    # logstore.v1.Log
    "/logstore.v1.Log/InitProducer": lambda r: [Need(_P, SOME_TOPIC)],
    "/logstore.v1.Log/Produce": lambda r: [_topic(_P, r.topic)],
    "/logstore.v1.Log/ProduceStream": lambda r: [_topic(_P, r.produce.topic)],  # every message
    "/logstore.v1.Log/Fetch": lambda r: [_topic(_C, r.topic)],
    "/logstore.v1.Log/Subscribe": lambda r: [_topic(_C, r.topic)],
    "/logstore.v1.Log/ListOffsets": lambda r: [_topic(DESCRIBE, r.topic)],
    # logstore.v1.Admin
    "/logstore.v1.Admin/CreateTopic": lambda r: [_topic(_A, r.topic)],
    "/logstore.v1.Admin/DeleteTopic": lambda r: [_topic(_A, r.topic)],
    "/logstore.v1.Admin/CreatePartitions": lambda r: [_topic(_A, r.topic)],
    "/logstore.v1.Admin/DescribeTopic": lambda r: [_topic(DESCRIBE, r.topic)],
    "/logstore.v1.Admin/ListTopics": lambda r: [],  # the answer is filtered instead
    # logstore.v1.Groups
    "/logstore.v1.Groups/Consume": _consume,  # the first message (the join)
    "/logstore.v1.Groups/CommitOffsets": lambda r: [_group(_C, r.group)]
    + [_topic(_C, t) for t in _offset_topics(r.offsets)],
    "/logstore.v1.Groups/ProduceAndCommit": _produce_and_commit,
    "/logstore.v1.Groups/FetchCommittedOffsets": lambda r: [_group(_CA, r.group)],
    "/logstore.v1.Groups/ListGroups": lambda r: [],  # the answer is filtered instead
    "/logstore.v1.Groups/DescribeGroup": lambda r: [_group(_CA, r.group)],
    "/logstore.v1.Groups/SeekGroup": lambda r: [_group(_A, r.group), _topic(DESCRIBE, r.topic)],
    "/logstore.v1.Groups/DeleteGroup": lambda r: [_group(_A, r.group)],
    "/logstore.v1.Groups/SetRetryPolicy": lambda r: [_group(_A, r.group), _topic(_C, r.topic)],
    "/logstore.v1.Groups/ListDeadLetters": lambda r: [_group(_CA, r.group), _topic(_C, r.topic)],
    "/logstore.v1.Groups/RedriveDeadLetters": lambda r: [_group(_A, r.group), _topic(DESCRIBE, r.topic)],
    "/logstore.v1.Groups/PurgeDeadLetters": lambda r: [_group(_A, r.group), _topic(DESCRIBE, r.topic)],
}
"""Every logstore RPC and what its request needs."""

UNCHECKED = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Methods served without a token: load balancers and probes call them."""

AUTHENTICATED_ONLY = frozenset({
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
})
"""Methods any valid token may call: reflection describes the (public) schema, no data."""


def requirements(method: str, request: Any) -> list[Need]:
    """What ``request`` to ``method`` needs.  Raises KeyError for a method without a rule."""
    return list(RULES[method](request))


def check(principal: str, grants: Grants, needs: Iterable[Need]) -> None:
    """Raise PermissionDenied naming the principal, the permission and the resource
    for the first need ``grants`` do not meet."""
    for need in needs:
        if not grants.allows(need):
            raise PermissionDenied(_denial(principal, need))


def _denial(principal: str, need: Need) -> str:
    text = f"principal {principal!r} may not do this: it needs {need.describe()}"
    if need.kind == TOPIC:
        if need.name.startswith(INTERNAL_PREFIX) and need.any_of & {PRODUCE, ADMIN}:
            return (
                f"principal {principal!r} may not do this: topic {need.name!r} is internal to the broker; "
                "no client may write or administer it"
            )
        owners = derived_owners(need.name)
        if owners:
            origin, group = owners[-1]
            text += (
                f" ({need.name!r} is a retry/dead-letter topic of group {group!r} for topic {origin!r}: "
                "it follows the group's permissions, see docs/security.md)"
            )
    return text


def visible_topic(grants: Grants, topic: str) -> bool:
    """True if the principal may see ``topic`` in ListTopics (any permission on it)."""
    return grants.topic_allows(DESCRIBE, topic)


def visible_group(grants: Grants, group: str) -> bool:
    """True if the principal may see ``group`` in ListGroups (consume or admin on it)."""
    return grants.group_allows(_CA, group)
