"""Least privilege on a real broker: SASL_SSL (SCRAM-SHA-512 over TLS) and one user per service.

The broker (hack/kafka.sh, KAFKA_SECURITY=sasl_ssl) allows nothing without an ACL; each service
gets exactly the ACLs of loginpipe.rights.kafka_acls, applied by the super user.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from loginpipe.kafka_io import acl_bindings
from loginpipe.rights import kafka_acls
from tests.integration.conftest import LocalKafka, Pipeline, free_port
from tests.integration.test_pipeline import assert_exactly_once, generate_args, get

pytestmark = pytest.mark.integration

ROLES = ("generator", "consumer", "aggregator", "replayer")


class Secured:
    """A pipeline on a SASL_SSL broker of its own, with a user and its ACLs per service."""

    def __init__(self, kafka: LocalKafka, redis_url: str, tmp: Path) -> None:
        self.kafka = kafka
        self.admin = AdminClient({"bootstrap.servers": kafka.bootstrap, **kafka.client_config()})
        self.pl = pl = Pipeline(kafka.bootstrap, redis_url, tmp, partitions=3)
        pl.kafka_client = kafka.client_config()
        pl.create_topics(self.admin)
        pl.env.update(
            {
                "LOGINPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "LOGINPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "LOGINPIPE_KAFKA_SSL_CA_LOCATION": kafka.ca,
            }
        )
        self.users: dict[str, tuple[str, str]] = {}
        for role in ROLES:
            name, password = f"{role}-{pl.id}", uuid.uuid4().hex
            upsert = UserScramCredentialUpsertion(
                name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
            )
            for fut in self.admin.alter_user_scram_credentials([upsert]).values():
                fut.result(timeout=30)
            acls = kafka_acls(
                role,
                input_topic=pl.input,
                processed_topic=pl.processed,
                errors_topic=pl.errors,
                group=pl.aggregator_group if role == "aggregator" else pl.consumer_group,
                transactional_id=pl.env["LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"],
                replayed_topic=pl.replayed,
                replay_transactional_id=pl.env["LOGINPIPE_REPLAY_TRANSACTIONAL_ID"],
            )
            for fut in self.admin.create_acls(acl_bindings(f"User:{name}", acls)).values():
                fut.result(timeout=30)
            self.users[role] = (name, password)

    def env(self, role: str, password: str | None = None) -> dict[str, str]:
        name, real = self.users[role]
        return {
            "LOGINPIPE_KAFKA_SASL_USERNAME": name,
            "LOGINPIPE_KAFKA_SASL_PASSWORD": real if password is None else password,
        }

    def client(self, role: str) -> dict[str, Any]:
        name, password = self.users[role]
        config = self.kafka.client_config(name, password)
        return {"bootstrap.servers": self.kafka.bootstrap, **config}


@pytest.fixture
def secured(own_kafka, redis_url: str, tmp_path: Path) -> Iterator[Secured]:
    s = Secured(own_kafka(security="sasl_ssl"), redis_url, tmp_path)
    yield s
    s.pl.close()


def test_the_pipeline_runs_exactly_once_over_sasl_ssl_with_each_service_held_to_its_acls(
    secured: Secured,
) -> None:
    pl = secured.pl
    ports = {"consumer": free_port(), "aggregator": free_port()}
    for role, command in (("consumer", "consume"), ("aggregator", "aggregate")):
        pl.service(
            role, command, LOGINPIPE_METRICS_PORT=str(ports[role]), **secured.env(role)
        ).start()
    gen = pl.run_cli(*generate_args(count=5_000), **secured.env("generator"))
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert_exactly_once(pl, 5_000)
    # Nor do they reach the metrics.
    for role, port in ports.items():
        status, body = get(port, "/metrics")
        assert status == 200 and "loginpipe_" in body
        assert all(password not in body for _, password in secured.users.values()), role
    for svc in pl.services:
        log = svc.log()
        assert "AUTHORIZATION_FAILED" not in log and "Traceback" not in log, log[-3000:]
    # The credentials never reach a log.
    for _, password in secured.users.values():
        assert all(password not in svc.log() for svc in pl.services)
        assert password not in gen.stdout + gen.stderr


def _produce_error(conf: dict[str, Any], topic: str) -> KafkaError | None:
    errors: list[KafkaError] = []
    p = Producer({**conf, "message.timeout.ms": 10_000})
    p.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    p.flush(15)
    return errors[0] if errors else None


def test_each_service_is_refused_what_it_does_not_need(secured: Secured) -> None:
    pl = secured.pl
    # Writes outside a service's rights: the consumer to the input, the aggregator anywhere,
    # the generator to an output.
    for role, topic in (
        ("consumer", pl.input),
        ("aggregator", pl.processed),
        ("aggregator", pl.errors),
        ("generator", pl.processed),
        ("replayer", pl.input),
        ("replayer", pl.errors),
    ):
        err = _produce_error(secured.client(role), topic)
        assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (
            role,
            topic,
            err,
        )
    # The generator cannot read; the aggregator cannot read the input.
    for role, topic, group in (
        ("generator", pl.input, pl.consumer_group),
        ("aggregator", pl.input, pl.aggregator_group),
    ):
        c = Consumer({**secured.client(role), "group.id": group})
        try:
            c.subscribe([topic])
            refused = None
            for _ in range(50):
                msg = c.poll(0.2)
                if msg is not None and msg.error() is not None:
                    refused = msg.error().code()
                    break
            assert refused in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.GROUP_AUTHORIZATION_FAILED,
            ), (role, topic, refused)
        finally:
            c.close()
    # No service creates topics.
    for role in ROLES:
        admin = AdminClient(secured.client(role))
        fut = admin.create_topics([NewTopic(f"extra-{pl.id}-{role}", 1, 1)])[
            f"extra-{pl.id}-{role}"
        ]
        with pytest.raises(KafkaException) as exc:
            fut.result(timeout=30)
        assert exc.value.args[0].code() in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        )


def test_the_replay_runs_as_its_own_user_and_the_errors_command_with_read_rights(
    secured: Secured,
) -> None:
    pl = secured.pl
    pl.service("consumer", "consume", **secured.env("consumer")).start()
    gen = pl.run_cli(*generate_args(count=2_000), **secured.env("generator"))
    assert gen.returncode == 0, gen.stderr[-3000:]
    errors = len(pl.read_all(pl.errors, expected=1))
    assert errors > 0
    out = pl.run_cli("replay", "--json", **secured.env("replayer"))
    assert out.returncode == 0, out.stderr[-3000:]
    report = orjson.loads(out.stdout)
    # Today's rules wrote these errors: none is valid now, each is read and left in place.
    assert report["replayed"] == 0 and report["still_invalid"] + report["not_replayable"] > 0
    summary = pl.run_cli("errors", "--json", **secured.env("replayer"))  # it may read errors
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert orjson.loads(summary.stdout)["records"] >= report["still_invalid"]


def test_a_wrong_password_or_an_untrusted_certificate_exits_2_naming_the_setting(
    secured: Secured, own_redis
) -> None:
    pl = secured.pl
    wrong = uuid.uuid4().hex
    out = pl.run_cli("consume", timeout=60, **secured.env("consumer", password=wrong))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "LOGINPIPE_KAFKA_SASL_PASSWORD" in out.stderr and "Traceback" not in out.stderr
    assert wrong not in out.stderr + out.stdout
    other_ca = own_redis(tls=True).ca  # a CA that did not sign the broker's certificate
    out = pl.run_cli(
        "generate",
        "--count=1",
        timeout=60,
        LOGINPIPE_KAFKA_SSL_CA_LOCATION=other_ca,
        **secured.env("generator"),
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "LOGINPIPE_KAFKA_SSL_CA_LOCATION" in out.stderr and "Traceback" not in out.stderr
    # A topic the user has no right to is named as such, not as a missing topic: the
    # aggregator started with the generator's user, which may not read the processed topic.
    out = pl.run_cli("aggregate", timeout=60, **secured.env("generator"))
    assert out.returncode == 2, out.stderr[-3000:]
    assert "may not use topic" in out.stderr and pl.processed in out.stderr
