"""What each service may do on Redis and on Kafka, and nothing more: one definition. Pure.

Redis ACL rules (Redis 7), one user per role:

- ``aggregator``: the commands the aggregator runs, directly or inside its scripts (Redis 7
  checks a script's commands against the caller's rights), on the keys under its prefix only.
- ``reader``: ``loginpipe counts``, read-only (``%R~``) on the same keys.

Everything else is refused: FLUSHALL, CONFIG, KEYS, SCRIPT FLUSH, any key outside the prefix,
any Pub/Sub channel. ``loginpipe redis-acl ROLE`` prints a role's rules, for ``ACL SETUSER`` or
an ACL file; the tests apply them to a real Redis and check both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

# The start-up check. (redis-py also sends CLIENT SETINFO on connect, Redis 7.2+, and ignores
# a refusal: left out, as Redis 7.0 does not know the command.)
_CONNECT = ("ping", "select")  # SELECT: a URL naming a database other than 0
# What redis-py's Redis Cluster client asks to learn the cluster's layout.
_CLUSTER = ("cluster|slots", "cluster|shards", "command")

REDIS_COMMANDS: dict[str, tuple[str, ...]] = {
    "aggregator": (
        *_CONNECT,
        *_CLUSTER,
        "info",  # start-up check of the eviction policy (INFO memory)
        "exists",  # the layout migration
        "eval",  # the layout migration's script
        "evalsha",  # the batch script
        "script|load",  # the batch script, loaded once per Redis (after a restart, again)
        "hgetall",  # counts and positions
        # inside the scripts:
        "hget",
        "hset",
        "hincrby",
        "hkeys",
        "del",
    ),
    "reader": (*_CONNECT, *_CLUSTER, "hgetall"),
}


def redis_acl_rules(role: str, key_prefix: str) -> str:
    """The ACL rules of ``role`` (no user name, no password), for ``ACL SETUSER``."""
    if role not in REDIS_COMMANDS:
        raise ValueError(f"unknown role {role!r}; known: {', '.join(REDIS_COMMANDS)}")
    if not key_prefix or any(c in key_prefix for c in " *?[]\\"):
        raise ValueError(
            f"key prefix {key_prefix!r} cannot be an ACL key pattern: it must be non-empty, "
            "without spaces or glob characters"
        )
    keys = f"%R~{key_prefix}*" if role == "reader" else f"~{key_prefix}*"
    commands = " ".join(f"+{c}" for c in REDIS_COMMANDS[role])
    return f"resetkeys resetchannels -@all {commands} {keys}"


# ---- Kafka ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaAcl:
    """Allow ``operations`` on one resource (Kafka's names: Read, Write, Describe...)."""

    resource: str  # topic, group or transactionalId (Strimzi's names)
    name: str
    pattern: str  # literal or prefix
    operations: tuple[str, ...]


def kafka_acls(
    role: str,
    *,
    input_topic: str,
    processed_topic: str,
    errors_topic: str,
    group: str = "",
    transactional_id: str = "",
    transactional_id_prefix: str = "",
    group_prefix: str = "",
    replayed_topic: str = "",
    replay_transactional_id: str = "",
    reader_group: str = "loginpipe-reader",
    registry_topics: tuple[str, ...] = (),
    registry_group_prefix: str = "apicurio-",
) -> list[KafkaAcl]:
    """What ``role`` may do on Kafka, and nothing more (no topic creation, no cluster rights).

    - generator: write the input topic;
    - consumer: read the input topic in its group; write the processed and errors topics;
      read the errors topic's configuration (its max.message.bytes sizes the error
      envelopes); use its transactional id (exact, or a prefix: one id per pod);
    - aggregator: read the processed topic in its group;
    - tester (the chart's `helm test`): write the input, read both outputs, in groups under
      ``group_prefix``;
    - replayer (``loginpipe replay``, and ``loginpipe errors``): read the errors topic, write
      the processed topic, read and write the replay ledger, use its transactional id, and
      describe the reader group (it reads by assignment and commits no offsets);
    - registry (the chart's optional Apicurio Registry, KafkaSQL storage): read and write its
      own topics (the journal, the snapshots, the events) and read their configuration (it
      verifies at start-up that nothing deletes its records), in consumer groups under its
      prefix (a new group at every start, to replay the whole journal). It creates no topic:
      the chart does (measured on a SASL_SSL broker that allows nothing else:
      tests/integration/test_schema_registry.py).

    Writing implies the idempotent producer's rights (KIP-679), reading a group implies
    describing it, and Write or Read on a topic implies Describe.
    """
    topic = "topic"
    if role == "generator":
        return [KafkaAcl(topic, input_topic, "literal", ("Write", "Describe"))]
    if role == "consumer":
        if not group or not (transactional_id or transactional_id_prefix):
            raise ValueError("the consumer's rights need its group and transactional id")
        txn = KafkaAcl(
            "transactionalId",
            transactional_id or transactional_id_prefix,
            "literal" if transactional_id else "prefix",
            ("Write", "Describe"),
        )
        return [
            KafkaAcl(topic, input_topic, "literal", ("Read", "Describe")),
            KafkaAcl("group", group, "literal", ("Read",)),
            KafkaAcl(topic, processed_topic, "literal", ("Write", "Describe")),
            KafkaAcl(topic, errors_topic, "literal", ("Write", "Describe", "DescribeConfigs")),
            txn,
        ]
    if role == "aggregator":
        if not group:
            raise ValueError("the aggregator's rights need its group")
        return [
            KafkaAcl(topic, processed_topic, "literal", ("Read", "Describe")),
            KafkaAcl("group", group, "literal", ("Read",)),
        ]
    if role == "tester":
        if not group_prefix:
            raise ValueError("the tester's rights need its group prefix")
        return [
            KafkaAcl(topic, input_topic, "literal", ("Write", "Describe")),
            KafkaAcl(topic, processed_topic, "literal", ("Read", "Describe")),
            KafkaAcl(topic, errors_topic, "literal", ("Read", "Describe")),
            KafkaAcl("group", group_prefix, "prefix", ("Read",)),
        ]
    if role == "replayer":
        if not replayed_topic or not replay_transactional_id:
            raise ValueError(
                "the replayer's rights need the replay ledger and its transactional id"
            )
        return [
            KafkaAcl(topic, errors_topic, "literal", ("Read", "Describe")),
            KafkaAcl(topic, processed_topic, "literal", ("Write", "Describe")),
            KafkaAcl(topic, replayed_topic, "literal", ("Read", "Write", "Describe")),
            KafkaAcl("transactionalId", replay_transactional_id, "literal", ("Write", "Describe")),
            # Only looked up (librdkafka asks for its coordinator): it commits nothing.
            KafkaAcl("group", reader_group, "literal", ("Describe",)),
        ]
    if role == "registry":
        if not registry_topics:
            raise ValueError("the registry's rights need its topics")
        return [
            *(
                KafkaAcl(topic, t, "literal", ("Read", "Write", "Describe", "DescribeConfigs"))
                for t in registry_topics
            ),
            KafkaAcl("group", registry_group_prefix, "prefix", ("Read",)),
        ]
    raise ValueError(f"unknown role {role!r}; known: {', '.join(KAFKA_ROLES)}")


# The pipeline's roles, a KafkaUser each in the chart; and the optional schema registry's.
KAFKA_ROLES = ("generator", "consumer", "aggregator", "tester", "replayer")
REGISTRY_ROLE = "registry"
# The chart's placeholders (files/kafka-acls.json): the release's topic and group names.
CHART_NAMES = {
    "input_topic": "{input}",
    "processed_topic": "{processed}",
    "errors_topic": "{errors}",
    "transactional_id_prefix": "loginpipe-consumer-",  # the default id: one per pod
    "group_prefix": "helm-test-",  # charts/loginpipe/files/routing_test.py
    "replayed_topic": "{replayed}",
    "replay_transactional_id": "{replay_transactional_id}",
}
CHART_REGISTRY_TOPICS = ("{registry_journal}", "{registry_snapshots}", "{registry_events}")


def strimzi_acls(role: str) -> list[dict[str, object]]:
    """``role``'s ACLs as Strimzi's KafkaUser lists them, with the chart's placeholders."""
    group = {"consumer": "{consumer_group}", "aggregator": "{aggregator_group}"}.get(role, "")
    return [
        {
            "resource": {"type": a.resource, "name": a.name, "patternType": a.pattern},
            "operations": list(a.operations),
            "host": "*",
        }
        for a in kafka_acls(role, group=group, registry_topics=CHART_REGISTRY_TOPICS, **CHART_NAMES)
    ]
