"""Kafka helpers of the benchmark: topics, groups, committed offsets, reading outputs."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

# Output topics stamp records with the broker's append time, so that "first to last output
# record" is measured by one clock for every contender, whatever its client does with record
# timestamps (Quix Streams, for one, forwards the input record's timestamp).
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}

HEADER_DEVICE_TYPE = "loginpipe-device-type"
HEADER_REASON = "loginpipe-reason"


class Kafka:
    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.topics: list[str] = []
        self.groups: list[str] = []
        self._watermarks: Consumer | None = None

    def check(self, timeout: float = 10.0) -> str:
        md = self.admin.list_topics(timeout=timeout)
        return ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())

    def create_topics(self, names: list[str], config: dict[str, str] | None = None) -> None:
        new = [
            NewTopic(n, num_partitions=self.partitions, replication_factor=1, config=config or {})
            for n in names
        ]
        self.topics += names
        for fut in self.admin.create_topics(new, operation_timeout=30).values():
            fut.result(60)
        # Wait until the metadata shows them with their leaders (a fresh topic can take a
        # moment to be usable everywhere).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = self.admin.list_topics(timeout=10).topics
            if all(
                n in md
                and md[n].error is None
                and len(md[n].partitions) == self.partitions
                and all(p.leader >= 0 for p in md[n].partitions.values())
                for n in names
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"topics {names} not ready after 30 s")

    def group(self, name: str) -> str:
        self.groups.append(name)
        return name

    def committed(self, group: str, topic: str) -> int:
        """Sum of the group's committed offsets on the topic (0 for none yet)."""
        req = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p) for p in range(self.partitions)]
        )
        try:
            futures = self.admin.list_consumer_group_offsets([req], request_timeout=10)
            res = futures[group].result(10)
        except KafkaException:
            return 0
        return sum(max(tp.offset, 0) for tp in res.topic_partitions)

    def end_offsets(self, topic: str) -> list[int]:
        """High watermarks of the topic's partitions (-1 where the broker did not say)."""
        if self._watermarks is None:
            self._watermarks = Consumer(
                {"bootstrap.servers": self.bootstrap, "group.id": "bench-watermarks"}
            )
        out = []
        for p in range(self.partitions):
            try:
                out.append(self._watermarks.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            except KafkaException:  # e.g. a leader not known yet just after creation
                out.append(-1)
        return out

    def delete(self, names: list[str]) -> None:
        """Delete topics now (a measured run's outputs: they are read back already)."""
        for fut in self.admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                fut.result(60)
        self.topics = [t for t in self.topics if t not in names]

    def cleanup(self) -> None:
        """Delete every topic and group this run created (errors ignored)."""
        if self.groups:
            try:
                for fut in self.admin.delete_consumer_groups(
                    self.groups, request_timeout=15
                ).values():
                    with contextlib.suppress(KafkaException):
                        fut.result(20)
            except KafkaException:
                pass
        if self.topics:
            for fut in self.admin.delete_topics(self.topics, operation_timeout=30).values():
                with contextlib.suppress(KafkaException):
                    fut.result(60)
        self.topics, self.groups = [], []
        if self._watermarks is not None:
            self._watermarks.close()
            self._watermarks = None


@dataclass
class TopicStats:
    records: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    by_header: Counter[str] = field(default_factory=Counter)
    timestamp_types: set[int] = field(default_factory=set)


def read_topics(
    bootstrap: str, topics: dict[str, str], partitions: int, timeout: float = 600.0
) -> dict[str, TopicStats]:
    """Read each topic from the start to its end (committed records only).

    ``topics`` maps a topic to the header whose values are tallied. Returns per topic the
    record count, the first and last record timestamps (ms) and the header's histogram.
    """
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
        }
    )
    stats = {t: TopicStats() for t in topics}
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    eof: set[tuple[str, int]] = set()
    want = len(topics) * partitions
    deadline = time.monotonic() + timeout
    try:
        while len(eof) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {list(topics)}: no end after {timeout:.0f} s")
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == err._PARTITION_EOF:
                        eof.add((m.topic(), m.partition()))  # type: ignore[arg-type]
                        continue
                    raise KafkaException(err)
                s = stats[m.topic()]  # type: ignore[index]
                s.records += 1
                ts_type, ts = m.timestamp()
                s.timestamp_types.add(ts_type)
                if s.first_ms is None or ts < s.first_ms:
                    s.first_ms = ts
                if s.last_ms is None or ts > s.last_ms:
                    s.last_ms = ts
                header = topics[m.topic()]  # type: ignore[index]
                value = None
                for k, v in m.headers() or ():  # type: ignore[misc]  # a list of (str, bytes)
                    if k == header:
                        value = v.decode("utf-8", "replace") if isinstance(v, bytes) else None
                        break
                s.by_header[value or "(none)"] += 1
    finally:
        c.close()
    return stats


def span_ms(stats: dict[str, TopicStats]) -> tuple[int, int]:
    """First and last record timestamp over several topics."""
    firsts = [s.first_ms for s in stats.values() if s.first_ms is not None]
    lasts = [s.last_ms for s in stats.values() if s.last_ms is not None]
    if not firsts or not lasts:
        raise ValueError("no output records")
    return min(firsts), max(lasts)


def all_log_append(stats: dict[str, TopicStats]) -> bool:
    return all(s.timestamp_types <= {TIMESTAMP_LOG_APPEND_TIME} for s in stats.values())


def as_plain(stats: dict[str, TopicStats]) -> dict[str, Any]:
    return {
        t: {"records": s.records, "by_header": dict(sorted(s.by_header.items()))}
        for t, s in stats.items()
    }
