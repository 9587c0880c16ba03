"""Settings: defaults, errors that name the variable, secrets masked, README in step."""

from __future__ import annotations

from pathlib import Path

import pytest

from loginpipe.consumer import Router
from loginpipe.exceptions import ConfigError
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import (
    AggregatorSettings,
    ConsumerSettings,
    GeneratorSettings,
    Secret,
    check_unknown,
    describe,
    known_variables,
    load,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_match_the_documented_local_setup() -> None:
    c = load(ConsumerSettings, {})
    assert c.kafka_bootstrap == "localhost:9092"
    assert (c.topic_input, c.topic_processed, c.topic_errors) == (
        "user-login",
        "user-login-processed",
        "user-login-errors",
    )
    assert c.delivery == "exactly_once"
    a = load(AggregatorSettings, {})
    assert a.redis_url == "redis://localhost:6379/0"
    assert a.counts_key == "loginpipe:device_counts"


def test_each_service_has_its_own_default_metrics_port() -> None:
    ports = {
        load(cls, {}).metrics_port
        for cls in (GeneratorSettings, ConsumerSettings, AggregatorSettings)
    }
    assert len(ports) == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LOGINPIPE_CONSUMER_BATCH_SIZE": "many"},
            "LOGINPIPE_CONSUMER_BATCH_SIZE='many' is not an integer",
        ),
        (
            {"LOGINPIPE_CONSUMER_BATCH_SIZE": "0"},
            "LOGINPIPE_CONSUMER_BATCH_SIZE='0' is below the minimum",
        ),
        (
            {"LOGINPIPE_CONSUMER_DELIVERY": "maybe"},
            "LOGINPIPE_CONSUMER_DELIVERY='maybe' is not one of",
        ),
        (
            {"LOGINPIPE_METRICS_PORT": "70000"},
            "LOGINPIPE_METRICS_PORT='70000' is above the maximum",
        ),
        ({"LOGINPIPE_STARTUP_TIMEOUT_SECONDS": "nan"}, "is not a finite number"),
        ({"LOGINPIPE_TOPIC_ERRORS": "user-login"}, "must be three different topics"),
        ({"LOGINPIPE_KAFKA_BOOTSTRAP": " "}, "LOGINPIPE_KAFKA_BOOTSTRAP is empty"),
        (
            {"LOGINPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "set LOGINPIPE_KAFKA_SASL_USERNAME and LOGINPIPE_KAFKA_SASL_PASSWORD",
        ),
    ],
)
def test_a_bad_value_fails_with_the_variable_and_what_to_set(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(ConsumerSettings, env)


def test_a_bad_redis_url_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match="LOGINPIPE_REDIS_URL='localhost:6379' is not a Redis URL"
    ):
        load(AggregatorSettings, {"LOGINPIPE_REDIS_URL": "localhost:6379"})


def test_flags_override_the_environment() -> None:
    s = load(GeneratorSettings, {"LOGINPIPE_GENERATOR_RATE": "5"}, rate=50.0, count=None)
    assert s.rate == 50.0
    assert s.count == 0


def test_settings_are_frozen() -> None:
    s = load(ConsumerSettings, {})
    with pytest.raises(AttributeError):
        s.batch_size = 3  # type: ignore[misc]


def test_secrets_are_masked_in_logs_and_repr() -> None:
    s = load(
        AggregatorSettings,
        {"LOGINPIPE_REDIS_PASSWORD": "hunter2", "LOGINPIPE_KAFKA_SASL_PASSWORD": "s3cret"},
    )
    assert "hunter2" not in repr(s)
    assert "s3cret" not in repr(s)
    shown = describe(s)
    assert shown["LOGINPIPE_REDIS_PASSWORD"] == "***"
    assert s.redis_password.reveal() == "hunter2"
    assert isinstance(s.redis_password, Secret)


def test_sasl_credentials_reach_the_kafka_client_config() -> None:
    s = load(
        ConsumerSettings,
        {
            "LOGINPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "LOGINPIPE_KAFKA_SASL_USERNAME": "loginpipe",
            "LOGINPIPE_KAFKA_SASL_PASSWORD": "pw",
        },
    )
    conf = s.kafka_config()
    assert conf["sasl.username"] == "loginpipe"
    assert conf["sasl.password"] == "pw"
    assert conf["security.protocol"] == "SASL_SSL"


def test_an_unknown_loginpipe_variable_is_reported_as_a_likely_typo() -> None:
    with pytest.raises(ConfigError, match="LOGINPIPE_KAFKA_BOOTSTRAPS"):
        check_unknown({"LOGINPIPE_KAFKA_BOOTSTRAPS": "x", "PATH": "/bin"})
    check_unknown({"LOGINPIPE_KAFKA_BOOTSTRAP": "x", "LOGINPIPE_TEST_KAFKA": "y"})


def test_the_transactional_id_defaults_to_the_host_name() -> None:
    import socket

    assert load(ConsumerSettings, {}).default_transactional_id() == (
        f"loginpipe-consumer-{socket.gethostname()}"
    )


def test_every_variable_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = sorted(v for v in known_variables() if f"`{v}`" not in text)
    assert not missing, f"add these to README.md (`loginpipe config --markdown`): {missing}"


def test_the_readme_settings_table_is_the_generated_one() -> None:
    from loginpipe.settings import markdown_table

    text = README.read_text()
    table = text.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert table.strip() == markdown_table().strip(), "regenerate: loginpipe config --markdown"


def test_a_missing_ca_file_fails_naming_the_setting(tmp_path) -> None:
    with pytest.raises(ConfigError, match="LOGINPIPE_KAFKA_SSL_CA_LOCATION"):
        load(ConsumerSettings, {"LOGINPIPE_KAFKA_SSL_CA_LOCATION": str(tmp_path / "none.pem")})
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    load(ConsumerSettings, {"LOGINPIPE_KAFKA_SSL_CA_LOCATION": str(ca)})


@pytest.mark.parametrize(
    "url", ["redis://localhost:abc/0", "redis://localhost:70000/0", "redis://localhost:6379/x"]
)
def test_a_redis_url_with_a_bad_port_or_database_fails_naming_the_setting(url: str) -> None:
    from loginpipe.settings import AggregatorSettings

    with pytest.raises(ConfigError, match="LOGINPIPE_REDIS_URL") as err:
        load(AggregatorSettings, {"LOGINPIPE_REDIS_URL": url})
    assert "redis://host:port/db" in str(err.value)


def test_a_commit_interval_not_below_the_transaction_timeout_fails() -> None:
    env = {
        "LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS": "60000",
        "LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS": "60000",
    }
    with pytest.raises(ConfigError, match="LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS"):
        load(ConsumerSettings, env)
    with pytest.raises(ConfigError, match="is not below") as err:
        load(ConsumerSettings, env)
    assert "LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS=60000 is not below" in str(err.value)
    # At-least-once has no transactions: the pair does not matter there.
    load(ConsumerSettings, {**env, "LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"})


def test_the_commit_intervals_bound_defaults_to_a_second_or_the_interval_if_longer() -> None:
    assert load(ConsumerSettings, {}).commit_interval_bound_ms == 1000
    # A deployment with a long interval keeps starting (the bound follows it), as before.
    long = load(ConsumerSettings, {"LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS": "2000"})
    assert long.commit_interval_bound_ms == 2000


def test_a_commit_interval_bound_below_the_interval_or_past_the_timeout_fails() -> None:
    with pytest.raises(ConfigError, match="LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS=20 is below"):
        load(ConsumerSettings, {"LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS": "20"})
    env = {
        "LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS": "20000",
        "LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT_MS": "10000",
    }
    with pytest.raises(ConfigError, match="is not below LOGINPIPE_CONSUMER_TRANSACTION_TIMEOUT"):
        load(ConsumerSettings, env)
    s = load(ConsumerSettings, {**env, "LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"})
    assert (s.commit_interval_in_effect_ms, s.commit_interval_bound_ms) == (1000, 20000)


def test_the_commit_interval_defaults_by_mode_and_a_set_one_holds_in_both() -> None:
    eos = load(ConsumerSettings, {})
    alo = load(ConsumerSettings, {"LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"})
    assert (eos.commit_interval_in_effect_ms, eos.commit_interval_bound_ms) == (50, 1000)
    assert (alo.commit_interval_in_effect_ms, alo.commit_interval_bound_ms) == (1000, 1000)
    for delivery in ("exactly_once", "at_least_once"):
        s = load(
            ConsumerSettings,
            {
                "LOGINPIPE_CONSUMER_DELIVERY": delivery,
                "LOGINPIPE_CONSUMER_COMMIT_INTERVAL_MS": "200",
            },
        )
        assert s.commit_interval_in_effect_ms == 200


def test_a_bound_below_the_at_least_once_default_interval_names_the_interval_in_effect() -> None:
    env = {
        "LOGINPIPE_CONSUMER_DELIVERY": "at_least_once",
        "LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS": "500",
    }
    with pytest.raises(ConfigError, match="below the commit interval, 1000 ms"):
        load(ConsumerSettings, env)


def test_a_secret_can_come_from_a_file_and_never_from_both(tmp_path) -> None:
    f = tmp_path / "password"
    f.write_text("s3cret\n")
    s = load(AggregatorSettings, {"LOGINPIPE_REDIS_PASSWORD_FILE": str(f)})
    assert s.redis_password.reveal() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(describe(s))
    with pytest.raises(ConfigError, match="set only one"):
        load(
            AggregatorSettings,
            {"LOGINPIPE_REDIS_PASSWORD_FILE": str(f), "LOGINPIPE_REDIS_PASSWORD": "x"},
        )
    with pytest.raises(ConfigError, match=r"LOGINPIPE_KAFKA_SASL_PASSWORD_FILE.*cannot be read"):
        load(AggregatorSettings, {"LOGINPIPE_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})
    check_unknown({"LOGINPIPE_KAFKA_SASL_PASSWORD_FILE": "x", "LOGINPIPE_REDIS_PASSWORD_FILE": "y"})


def test_the_kafka_user_name_can_come_from_a_file_but_plain_settings_cannot(tmp_path) -> None:
    f = tmp_path / "username"
    f.write_text("loginpipe-consumer\n")
    s = load(ConsumerSettings, {"LOGINPIPE_KAFKA_SASL_USERNAME_FILE": str(f)})
    assert s.kafka_sasl_username == "loginpipe-consumer"
    check_unknown({"LOGINPIPE_KAFKA_SASL_USERNAME_FILE": "x"})
    with pytest.raises(ConfigError, match="LOGINPIPE_TOPIC_INPUT_FILE"):
        check_unknown({"LOGINPIPE_TOPIC_INPUT_FILE": "x"})


def test_the_producers_linger_defaults_by_mode_and_a_set_one_reaches_the_producer() -> None:
    def producer_linger(env: dict[str, str]) -> int:
        metrics = Metrics("consumer")
        router = Router(load(ConsumerSettings, env), metrics, Health(metrics), Stopper())
        router.claim = _Claim()  # exactly once's transactional id; at least once ignores it
        return router._producer_config()["linger.ms"]

    alo = {"LOGINPIPE_CONSUMER_DELIVERY": "at_least_once"}
    assert load(ConsumerSettings, {}).linger_in_effect_ms == 5
    assert load(ConsumerSettings, alo).linger_in_effect_ms == 1
    assert producer_linger({}) == 5
    assert producer_linger(alo) == 1
    # 0 is librdkafka's "send at once", not "the default".
    assert producer_linger({**alo, "LOGINPIPE_CONSUMER_LINGER_MS": "0"}) == 0
    assert producer_linger({"LOGINPIPE_CONSUMER_LINGER_MS": "20"}) == 20
    with pytest.raises(ConfigError, match="LOGINPIPE_CONSUMER_LINGER_MS='-2' is below"):
        load(ConsumerSettings, {"LOGINPIPE_CONSUMER_LINGER_MS": "-2"})


class _Claim:
    transactional_id = "loginpipe-consumer-test"
