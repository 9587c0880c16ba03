"""Every Prometheus metric of the three services, declared in one place.

Names follow Prometheus' rules: ``loginpipe_`` prefix, base units, ``_total`` on counters,
bounded label values (service, topic, partition, reason code, device type; never user ids).
Each service process registers only the metrics it updates, plus build info.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from loginpipe import __version__

BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metrics of one service, in a registry of its own."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("loginpipe_build", "Version of the running service.", registry=r).info(
            {"version": __version__, "component": service}
        )
        self.up = Gauge(
            "loginpipe_ready",
            "1 when the service is connected and working, else 0.",
            registry=r,
        )
        # Consumption (consumer and aggregator).
        self.messages_consumed = Counter(
            "loginpipe_messages_consumed_total",
            "Messages read from Kafka.",
            ["topic"],
            registry=r,
        )
        self.batch_duration = Histogram(
            "loginpipe_batch_duration_seconds",
            "Time to process one batch, from the first message in hand to its write.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "loginpipe_batch_messages",
            "Messages in one processed batch.",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "loginpipe_consumer_lag_messages",
            "Messages between this consumer's position and the partition's end, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        # Consumer: validation and routing.
        self.events_valid = Counter(
            "loginpipe_events_valid_total",
            "Events that passed validation and went to the processed topic.",
            ["device_type"],
            registry=r,
        )
        self.events_invalid = Counter(
            "loginpipe_events_invalid_total",
            "Events that failed validation and went to the error topic, by primary reason.",
            ["reason"],
            registry=r,
        )
        self.consumer_seconds = Counter(
            "loginpipe_consumer_seconds_total",
            "Wall time of the consumer's main loop by phase: consume (waiting for and taking "
            "messages), validate (parse, validate, serialise), produce (handing records to the "
            "producer), begin, send_offsets and commit (exactly-once: the transaction calls), "
            "flush and commit (at-least-once: delivery, then the offset commit).",
            ["phase"],
            registry=r,
        )
        self.commit_interval = Gauge(
            "loginpipe_consumer_commit_interval_seconds",
            "The commit interval in use: it grows while commits are slow, up to "
            "LOGINPIPE_CONSUMER_MAX_COMMIT_INTERVAL_MS.",
            registry=r,
        )
        self.transactions = Counter(
            "loginpipe_transactions_total",
            "Kafka transactions (or at-least-once offset commits) by result.",
            ["result"],
            registry=r,
        )
        self.transaction_failures = Counter(
            "loginpipe_transaction_failures_total",
            "Failed transactions (or offset commits), aborted and retried, by librdkafka error.",
            ["cause"],
            registry=r,
        )
        # Producers (generator and consumer).
        self.messages_produced = Counter(
            "loginpipe_messages_produced_total",
            "Messages acknowledged by Kafka, per topic.",
            ["topic"],
            registry=r,
        )
        self.produce_errors = Counter(
            "loginpipe_produce_errors_total",
            "Messages Kafka failed to take, per topic.",
            ["topic"],
            registry=r,
        )
        # Generator.
        self.generated = Counter(
            "loginpipe_generated_events_total",
            "Events generated, by kind (a valid quirk or a kind of bad event).",
            ["kind"],
            registry=r,
        )
        # Aggregator.
        self.device_logins = Gauge(
            "loginpipe_device_logins",
            "Logins counted in Redis per device type (the stored total, not this process's).",
            ["device_type"],
            registry=r,
        )
        self.events_counted = Counter(
            "loginpipe_events_counted_total",
            "Events this process added to the Redis counts.",
            ["device_type"],
            registry=r,
        )
        self.batches_skipped = Counter(
            "loginpipe_batches_skipped_total",
            "Partition batches not applied because Redis already held a later position "
            "(a replay after a crash or a rebalance).",
            registry=r,
        )
        self.events_uncountable = Counter(
            "loginpipe_events_uncountable_total",
            "Processed-topic records without a known device type (skipped, logged).",
            registry=r,
        )
        self.last_success = Gauge(
            "loginpipe_last_batch_timestamp_seconds",
            "Unix time of the last batch made durable.",
            registry=r,
        )
