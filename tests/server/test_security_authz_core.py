"""The pure authorization core (logstore.server.authz): grants, derived topics,
internal topics, and the RPC -> needs table.  No broker needed."""

from __future__ import annotations

import pytest

from logstore._proto.logstore.v1 import admin_pb2, groups_pb2, log_pb2
from logstore.broker.retry import delay_topic, dlq_topic, redrive_topic, tier_topic
from logstore.errors import InvalidArgument, PermissionDenied
from logstore.server.authz import (
    ADMIN,
    CONSUME,
    DESCRIBE,
    PRODUCE,
    RULES,
    Grants,
    check,
    derived_owners,
    requirements,
    visible_group,
    visible_topic,
)

P, C, A = frozenset({PRODUCE}), frozenset({CONSUME}), frozenset({ADMIN})


def grants(topics: dict | None = None, groups: dict | None = None) -> Grants:
    return Grants.from_toml("[principals.t]", topics or {}, groups or {})


def test_every_rpc_of_the_three_services_has_a_rule() -> None:
    """RULES names exactly the RPCs of logstore.v1.Log, Admin and Groups: a new RPC without a rule fails here."""
    methods = {
        f"/{service.full_name}/{method.name}"
        for module, name in ((log_pb2, "Log"), (admin_pb2, "Admin"), (groups_pb2, "Groups"))
        for service in (module.DESCRIPTOR.services_by_name[name],)
        for method in service.methods
    }
    assert set(RULES) == methods


def test_globs_match_whole_names_case_sensitively() -> None:
    """A pattern grants exactly the names fnmatch matches, per permission."""
    g = grants({"orders": ["produce"], "orders-*": ["consume"], "logs?": ["admin"]})
    assert g.topic_allows(P, "orders")
    assert not g.topic_allows(P, "orders-eu") and g.topic_allows(C, "orders-eu")
    assert not g.topic_allows(P, "Orders") and not g.topic_allows(C, "orders2")
    assert g.topic_allows(A, "logs1") and not g.topic_allows(A, "logs12")
    assert g.topic_allows(DESCRIBE, "orders-eu") and not g.topic_allows(DESCRIBE, "other")


def test_internal_topics_are_never_writable_whatever_the_grant() -> None:
    """Even produce and admin on "*" do not reach a __ topic; describing it still works."""
    g = grants({"*": ["produce", "consume", "admin"]})
    assert not g.topic_allows(P, "__consumer_offsets")
    assert not g.topic_allows(A, "__consumer_offsets")
    assert g.topic_allows(DESCRIBE, "__consumer_offsets")
    with pytest.raises(PermissionDenied, match="internal to the broker"):
        check("root", g, requirements("/logstore.v1.Log/Produce", log_pb2.ProduceRequest(topic="__group_policies")))


@pytest.mark.parametrize(
    "name",
    [tier_topic("orders", "email", 5000), dlq_topic("orders", "email"), redrive_topic("orders", "email"),
     delay_topic("orders", "email")],
)
def test_derived_topics_follow_their_group(name: str) -> None:
    """A retry/DLQ/redrive/delay topic of (orders, email) is reached through group 'email', not by a topic glob."""
    assert ("orders", "email") in derived_owners(name)
    member = grants({"orders": ["consume"]}, {"email": ["consume"]})
    stranger = grants({"orders*": ["produce", "consume", "admin"], "*": ["consume"]}, {"billing": ["consume", "admin"]})
    operator = grants({"orders": ["produce", "admin"]}, {"email": ["admin"]})
    assert member.topic_allows(C, name) and not member.topic_allows(P, name) and not member.topic_allows(A, name)
    assert not stranger.topic_allows(C, name) and not stranger.topic_allows(P, name)
    assert operator.topic_allows(P, name) and operator.topic_allows(A, name)
    assert visible_topic(member, name) and not visible_topic(stranger, name)


def test_a_literal_grant_reaches_an_ordinary_topic_of_derived_shape() -> None:
    """A topic that merely looks derived is granted by its exact name, never by a glob."""
    assert grants({"app.v1.delay": ["produce"]}).topic_allows(P, "app.v1.delay")
    assert not grants({"app.v1.*": ["produce"]}).topic_allows(P, "app.v1.delay")
    assert derived_owners("plain") == [] and derived_owners("x.dlq") == []


def test_dotted_names_are_granted_if_any_reading_grants() -> None:
    """'a.b.c.dlq' is (a, b.c) or (a.b, c): the rights on either pair reach it."""
    assert derived_owners("a.b.c.dlq") == [("a", "b.c"), ("a.b", "c")]
    assert grants({"a.b": ["consume"]}, {"c": ["consume"]}).topic_allows(C, "a.b.c.dlq")
    assert not grants({"a": ["consume"]}, {"c": ["consume"]}).topic_allows(C, "a.b.c.dlq")


def test_denial_names_principal_permission_and_resource() -> None:
    """PERMISSION_DENIED says who, which permission and which topic or group."""
    with pytest.raises(PermissionDenied) as caught:
        check("bob", grants({"orders": ["consume"]}), requirements(
            "/logstore.v1.Log/Produce", log_pb2.ProduceRequest(topic="orders")))
    assert "'bob'" in caught.value.message and "produce on topic 'orders'" in caught.value.message
    with pytest.raises(PermissionDenied, match="retry/dead-letter topic of group 'email'"):
        check("bob", grants(), requirements("/logstore.v1.Log/Fetch", log_pb2.FetchRequest(topic="t.email.dlq")))


def test_consume_join_needs_the_group_and_every_topic_and_admin_for_policies() -> None:
    """A join needs consume on its group and topics; carrying retry policies it needs admin on the group too."""
    join = groups_pb2.ConsumeRequest(join=groups_pb2.Join(group="email", topics=["a", "b"]))
    needs = requirements("/logstore.v1.Groups/Consume", join)
    g = grants({"a": ["consume"], "b": ["consume"]}, {"email": ["consume"]})
    check("svc", g, needs)
    with pytest.raises(PermissionDenied, match="topic 'b'"):
        check("svc", grants({"a": ["consume"]}, {"email": ["consume"]}), needs)
    join.join.retry_policies.add(topic="a", policy=groups_pb2.RetryPolicy(max_attempts=2))
    with pytest.raises(PermissionDenied, match="admin on group 'email'"):
        check("svc", g, requirements("/logstore.v1.Groups/Consume", join))
    assert requirements("/logstore.v1.Groups/Consume", groups_pb2.ConsumeRequest()) == []


def test_produce_and_commit_needs_produce_on_the_output_and_consume_on_the_group() -> None:
    """ProduceAndCommit is allowed only with produce on its topic AND consume on its group and input topics."""
    request = groups_pb2.ProduceAndCommitRequest(
        group="etl", produce=log_pb2.ProduceRequest(topic="out", partition=0),
        offsets=[groups_pb2.OffsetCommit(topic="in", partition=0, offset=1)],
    )
    needs = requirements("/logstore.v1.Groups/ProduceAndCommit", request)
    check("etl", grants({"out": ["produce"], "in": ["consume"]}, {"etl": ["consume"]}), needs)
    for partial in (grants({"in": ["consume"]}, {"etl": ["consume"]}), grants({"out": ["produce"], "in": ["consume"]})):
        with pytest.raises(PermissionDenied):
            check("etl", partial, needs)


def test_init_producer_needs_produce_somewhere() -> None:
    """InitProducer needs produce on at least one topic pattern, nothing else."""
    needs = requirements("/logstore.v1.Log/InitProducer", log_pb2.InitProducerRequest())
    check("p", grants({"x*": ["produce"]}), needs)
    with pytest.raises(PermissionDenied, match="produce on at least one topic"):
        check("c", grants({"*": ["consume"]}), needs)


def test_group_visibility_needs_consume_or_admin() -> None:
    """ListGroups shows a group to a principal with consume or admin on it."""
    g = grants(groups={"team-*": ["consume"], "ops": ["admin"]})
    assert visible_group(g, "team-a") and visible_group(g, "ops") and not visible_group(g, "other")


def test_bad_grants_are_refused_with_the_place_named() -> None:
    """Unknown permissions, produce on a group and non-list values are configuration errors."""
    with pytest.raises(InvalidArgument, match="unknown permission"):
        grants({"x": ["write"]})
    with pytest.raises(InvalidArgument, match="groups"):
        grants(groups={"g": ["produce"]})
    with pytest.raises(InvalidArgument, match="list of permissions"):
        grants({"x": 3})
