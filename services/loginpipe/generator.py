"""The generator service: seeded login events, a share of them bad, at a set rate."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from loginpipe.events import EventFactory, GroundTruth
from loginpipe.kafka_io import check_kafka
from loginpipe.metrics import Metrics
from loginpipe.runtime import Health, Stopper
from loginpipe.settings import GeneratorSettings

log = logging.getLogger(__name__)


class Generator:
    def __init__(
        self, settings: GeneratorSettings, metrics: Metrics, health: Health, stopper: Stopper
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.health = health
        self.stopper = stopper
        self.truth = GroundTruth()
        self.delivered = 0
        self.failed = 0
        self._produced_counter = metrics.messages_produced.labels(settings.topic_input)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self._produced_counter.inc()
        else:
            self.failed += 1
            self.metrics.produce_errors.labels(msg.topic()).inc()
            log.error("event not delivered", extra={"error": err.str()})

    def run(self) -> dict[str, Any]:
        """Produce until the count is reached or a stop; returns the run's ground truth."""
        s = self.s
        check_kafka(s, [s.topic_input], s.startup_timeout_seconds)
        conf: dict[str, Any] = s.kafka_config()
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
                "logger": logging.getLogger("librdkafka"),
            }
        )
        producer = Producer(conf)
        start_time = s.start_time or int(time.time())
        factory = EventFactory(s.seed, bad_share=s.bad_share, users=s.users, start_time=start_time)
        self.health.set_ready(True)
        log.info(
            "generator started",
            extra={"rate": s.rate, "count": s.count, "bad_share": s.bad_share, "seed": s.seed},
        )
        topic = s.topic_input
        interval = 1.0 / s.rate if s.rate > 0 else 0.0
        began = time.monotonic()
        n = 0
        kinds = self.metrics.generated
        try:
            while not self.stopper.stopping and (s.count == 0 or n < s.count):
                if interval:
                    # Pace against the schedule, not the previous event, so the rate holds.
                    ahead = began + n * interval - time.monotonic()
                    if ahead > 0:
                        producer.poll(min(ahead, 0.2))
                        self.health.beat()
                        continue
                ev = factory.next()
                while True:
                    try:
                        producer.produce(topic, ev.value, ev.key, on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.truth.add(ev)
                kinds.labels(ev.kind).inc()
                n += 1
                if n % 1000 == 0:
                    producer.poll(0)
                    self.health.beat()
        finally:
            left = producer.flush(30.0)
            self.health.set_ready(False, "stopping")
            summary = self.truth.as_dict()
            summary.update(delivered=self.delivered, failed=self.failed + left)
            log.info("generator stopped", extra={"summary": summary})
        return summary
