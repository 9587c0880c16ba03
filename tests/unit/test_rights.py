"""Each role's rights, as defined once in loginpipe.rights: what they allow, and never more."""

from __future__ import annotations

import pytest

from loginpipe.rights import REDIS_COMMANDS, kafka_acls, redis_acl_rules

TOPICS = {"input_topic": "in", "processed_topic": "proc", "errors_topic": "err"}
DANGEROUS_REDIS = {"flushall", "flushdb", "config", "keys", "script|flush", "shutdown", "debug"}


def test_redis_roles_start_from_nothing_and_keep_to_their_prefix() -> None:
    agg = redis_acl_rules("aggregator", "lp:").split()
    reader = redis_acl_rules("reader", "lp:").split()
    for rules in (agg, reader):
        assert rules[:3] == ["resetkeys", "resetchannels", "-@all"]
        assert not {r.lstrip("+") for r in rules if r.startswith("+")} & DANGEROUS_REDIS
        assert not any(r.startswith(("+@", "allkeys", "~*", "&")) for r in rules)
    assert agg[-1] == "~lp:*" and reader[-1] == "%R~lp:*"  # the reader only reads
    assert set(REDIS_COMMANDS["reader"]) < set(REDIS_COMMANDS["aggregator"])
    assert not {"hset", "hincrby", "del", "eval", "evalsha"} & set(REDIS_COMMANDS["reader"])


@pytest.mark.parametrize("prefix", ["", "a b", "a*", "a?", "a[b]", "a\\b"])
def test_a_key_prefix_that_is_not_a_plain_pattern_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        redis_acl_rules("aggregator", prefix)


def test_kafka_roles_reach_only_their_topics_group_and_transactional_id() -> None:
    def rights(role: str, **kw: str) -> set[tuple[str, str, str, str]]:
        return {
            (a.resource, a.name, a.pattern, op)
            for a in kafka_acls(role, **TOPICS, **kw)
            for op in a.operations
        }

    assert rights("generator") == {
        ("topic", "in", "literal", "Write"),
        ("topic", "in", "literal", "Describe"),
    }
    consumer = rights("consumer", group="cg", transactional_id_prefix="loginpipe-consumer-")
    assert ("topic", "in", "literal", "Read") in consumer
    assert ("topic", "in", "literal", "Write") not in consumer  # never writes its own input
    assert ("topic", "err", "literal", "DescribeConfigs") in consumer
    assert ("group", "cg", "literal", "Read") in consumer
    assert ("transactionalId", "loginpipe-consumer-", "prefix", "Write") in consumer
    aggregator = rights("aggregator", group="ag")
    assert {op for *_, op in aggregator} == {"Read", "Describe"}  # reads, never writes
    assert {name for _, name, _, _ in aggregator} == {"proc", "ag"}
    everything = rights("generator") | consumer | aggregator
    assert not {op for *_, op in everything} & {"Create", "Alter", "Delete", "ClusterAction", "All"}
    assert all(r in {"topic", "group", "transactionalId"} for r, *_ in everything)


def test_the_consumer_and_aggregator_rights_need_their_group() -> None:
    with pytest.raises(ValueError, match="group"):
        kafka_acls("aggregator", **TOPICS)
    with pytest.raises(ValueError, match="transactional id"):
        kafka_acls("consumer", **TOPICS, group="cg")
    with pytest.raises(ValueError, match="unknown role"):
        kafka_acls("admin", **TOPICS)


def test_the_registry_reaches_only_its_own_topics_and_groups_and_creates_nothing() -> None:
    acls = kafka_acls("registry", **TOPICS, registry_topics=("journal", "snaps"))
    rights = {(a.resource, a.name, a.pattern, op) for a in acls for op in a.operations}
    assert {name for _, name, _, _ in rights} == {"journal", "snaps", "apicurio-"}
    assert ("group", "apicurio-", "prefix", "Read") in rights
    assert ("topic", "journal", "literal", "DescribeConfigs") in rights
    assert not {op for *_, op in rights} & {"Create", "Alter", "Delete", "AlterConfigs", "All"}
    with pytest.raises(ValueError, match="its topics"):
        kafka_acls("registry", **TOPICS)
