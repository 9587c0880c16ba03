"""Integration fixtures: one real Kafka broker and one real Redis per test session.

By default the session starts its own single-node KRaft broker and Redis (through the
project's scripts, on free ports, in a temporary folder) and stops them at the end. Point
the suite at existing ones instead with LOGINPIPE_TEST_KAFKA_BOOTSTRAP and
LOGINPIPE_TEST_REDIS_URL. Every test gets unique topics, groups and Redis keys.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from loginpipe.redis_store import split_hash
from tests.conftest import require, wait_for

__all__ = ["wait_for"]  # the tests import it from here too

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(script: str, env: dict[str, str]) -> Iterator[None]:
    """A project script's ``start`` on entry and ``stop`` on exit, with ``env``."""
    path = str(ROOT / script)
    subprocess.run([path, "start"], env=env, check=True)
    try:
        yield
    finally:
        subprocess.run([path, "stop"], env=env, check=False)


def free_cluster_port() -> int:
    """A free port whose Redis Cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class LocalRedis:
    """A Redis of a test's own (hack/redis.sh), to stop, restart or reconfigure at will."""

    port: int
    data_dir: Path
    extra_config: str = ""
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def ca(self) -> str:
        """The CA that signed this Redis' certificate (REDIS_TLS=1)."""
        return str(self.data_dir / "tls" / "ca.crt")

    def _script(self, cmd: str) -> None:
        env = {
            **os.environ,
            "REDIS_PORT": str(self.port),
            "REDIS_DATA_DIR": str(self.data_dir),
            "REDIS_EXTRA_CONFIG": self.extra_config,
            "REDIS_TLS": "1" if self.tls else "0",
            "REDIS_STOP_TIMEOUT": "10",
        }
        subprocess.run([str(ROOT / "hack/redis.sh"), cmd], env=env, check=True)

    def start(self) -> LocalRedis:
        self._script("start")
        return self

    def stop(self) -> None:
        self._script("stop")


@dataclass
class LocalKafka:
    """A broker of a test's own (hack/kafka.sh), to kill and restart at will."""

    port: int
    controller_port: int
    data_dir: Path
    security: str = "plaintext"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        """The CA that signed the broker's certificate (security sasl_ssl)."""
        return str(self.data_dir / "tls" / "ca.crt")

    def client_config(self, user: str = "admin", password: str = "") -> dict[str, str]:
        """librdkafka settings of a client of this broker: its super user unless told."""
        if self.security == "plaintext":
            return {}
        if user == "admin":
            password = (self.data_dir / "admin.password").read_text().strip()
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": self.ca,
        }

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_DATA_DIR": str(self.data_dir),
            "KAFKA_SECURITY": self.security,
        }

    def start(self) -> LocalKafka:
        # hack/kafka.sh keeps one previous log; a test that restarts the broker keeps them all.
        current = self.data_dir / "kafka.log"
        if current.exists():
            runs = len(list(self.data_dir.glob("kafka-run-*.log")))
            shutil.copy(current, self.data_dir / f"kafka-run-{runs}.log")
        subprocess.run([str(ROOT / "hack/kafka.sh"), "start"], env=self._env(), check=True)
        return self

    def logs(self) -> str:
        """The broker's log over every start, oldest first."""
        runs = sorted(
            self.data_dir.glob("kafka-run-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
        )
        current = self.data_dir / "kafka.log"
        return "".join(p.read_text(errors="replace") for p in [*runs, current] if p.exists())

    def stop(self) -> None:
        subprocess.run([str(ROOT / "hack/kafka.sh"), "stop"], env=self._env(), check=False)

    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown) and wait until it is gone."""
        pid = int((self.data_dir / "kafka.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for("the broker to die", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[Callable[..., LocalKafka]]:
    require(_kafka_jars_present(), "Kafka jars are not fetched: run `make deps`")
    started: list[LocalKafka] = []

    def make(security: str = "plaintext") -> LocalKafka:
        k = LocalKafka(
            free_port(), free_port(), tmp_path / f"kafka-{len(started)}", security
        ).start()
        started.append(k)
        return k

    yield make
    for k in started:
        k.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., LocalRedis]]:
    require(
        shutil.which("redis-server") is not None, "redis-server is not installed: run `make deps`"
    )
    started: list[LocalRedis] = []

    def make(extra_config: str = "", tls: bool = False) -> LocalRedis:
        r = LocalRedis(free_port(), tmp_path / f"redis-{len(started)}", extra_config, tls).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster (hack/redis-cluster.sh); the URL of one master."""
    require(
        shutil.which("redis-server") is not None, "redis-server is not installed: run `make deps`"
    )
    ports: list[int] = []
    while len(ports) < 3:
        p = free_cluster_port()
        if p not in ports:
            ports.append(p)
    env = {
        **os.environ,
        "REDIS_CLUSTER_PORTS": " ".join(map(str, ports)),
        "REDIS_CLUSTER_DIR": str(tmp_path_factory.mktemp("redis-cluster")),
    }
    with started("hack/redis-cluster.sh", env):
        yield f"redis://127.0.0.1:{ports[0]}/0"


def _kafka_jars_present() -> bool:
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "hack/versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    libs = ROOT / ".cache/kafka" / versions["KAFKA_VERSION"] / "libs"
    return libs.is_dir() and any(libs.glob("kafka_*.jar"))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("LOGINPIPE_TEST_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    require(shutil.which("java") is not None, "java is not installed (needed for the Kafka broker)")
    require(
        _kafka_jars_present(),
        "Kafka jars are not fetched: run `make deps` (or hack/kafka.sh fetch)",
    )
    port, cport = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(cport),
        "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka")),
    }
    with started("hack/kafka.sh", env):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("LOGINPIPE_TEST_REDIS_URL")
    if existing:
        yield existing
        return
    require(
        shutil.which("redis-server") is not None, "redis-server is not installed: run `make deps`"
    )
    port = free_port()
    env = {
        **os.environ,
        "REDIS_PORT": str(port),
        "REDIS_DATA_DIR": str(tmp_path_factory.mktemp("redis")),
    }
    with started("hack/redis.sh", env):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class Service:
    """One service running as its own process, as in production."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    def start(self) -> Service:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loginpipe", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout=timeout)
        self.exits.append(rc)
        return rc

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.running():
            self.signal(signal.SIGTERM)
            try:
                self.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Pipeline:
    """Unique topics, groups and Redis keys for one test, and helpers around them."""

    def __init__(self, bootstrap: str, redis_url: str, tmp: Path, partitions: int) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.bootstrap = bootstrap
        self.redis_url = redis_url
        self.tmp = tmp
        self.partitions = partitions
        self.input = f"user-login-{self.id}"
        self.processed = f"user-login-processed-{self.id}"
        self.errors = f"user-login-errors-{self.id}"
        self.replayed = f"user-login-replayed-{self.id}"
        self.consumer_group = f"consumer-{self.id}"
        self.aggregator_group = f"aggregator-{self.id}"
        self.prefix = f"test:{self.id}:"
        self.redis = redis.Redis.from_url(redis_url)
        self.services: list[Service] = []
        # The test's own Kafka clients (readers, offsets, raw producer): extra librdkafka settings,
        # such as a secured broker's super user.
        self.kafka_client: dict[str, str] = {}
        self._admin: AdminClient | None = None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOGINPIPE_")},
            "PYTHONPATH": str(SERVICES),
            "LOGINPIPE_KAFKA_BOOTSTRAP": bootstrap,
            "LOGINPIPE_REDIS_URL": redis_url,
            "LOGINPIPE_REDIS_KEY_PREFIX": self.prefix,
            "LOGINPIPE_TOPIC_INPUT": self.input,
            "LOGINPIPE_TOPIC_PROCESSED": self.processed,
            "LOGINPIPE_TOPIC_ERRORS": self.errors,
            "LOGINPIPE_TOPIC_REPLAYED": self.replayed,
            "LOGINPIPE_REPLAY_TRANSACTIONAL_ID": f"replay-{self.id}",
            "LOGINPIPE_CONSUMER_GROUP": self.consumer_group,
            "LOGINPIPE_AGGREGATOR_GROUP": self.aggregator_group,
            "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID": f"tx-{self.id}",
            "LOGINPIPE_METRICS_PORT": "0",
            "LOGINPIPE_LOG_FORMAT": "text",
            "LOGINPIPE_STARTUP_TIMEOUT_SECONDS": "20",
            "LOGINPIPE_KAFKA_SESSION_TIMEOUT_MS": "6000",
        }

    def create_topics(self, admin: AdminClient) -> None:
        new = [
            NewTopic(t, num_partitions=self.partitions, replication_factor=1)
            for t in (self.input, self.processed, self.errors)
        ]
        new.append(
            NewTopic(
                self.replayed,
                num_partitions=self.partitions,
                replication_factor=1,
                config={"cleanup.policy": "compact"},
            )
        )
        for fut in admin.create_topics(new, operation_timeout=30).values():
            fut.result(timeout=30)

    def service(self, name: str, *args: str, **env: str) -> Service:
        svc = Service(
            name,
            list(args),
            {**self.env, **env},
            self.tmp / f"{name}-{len(self.services)}.log",
        )
        self.services.append(svc)
        return svc

    def run_cli(
        self, *args: str, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loginpipe", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def use_redis(self, url: str, cluster: bool = False, ca: str = "") -> None:
        """Point this pipeline's services (and its helpers) at another Redis."""
        self.redis_url = url
        self.env["LOGINPIPE_REDIS_URL"] = url
        if cluster:
            self.env["LOGINPIPE_REDIS_CLUSTER"] = "true"
        tls: dict[str, str] = {}
        if ca:
            self.env["LOGINPIPE_REDIS_SSL_CA_LOCATION"] = ca
            tls["ssl_ca_certs"] = ca
        self.redis = (
            redis.RedisCluster.from_url(url, **tls) if cluster else redis.Redis.from_url(url, **tls)
        )

    @property
    def counts_key(self) -> str:
        return f"{self.prefix}device_counts"

    def counts(self) -> dict[str, int]:
        """The device counts as stored (fields present only), positions left out."""
        raw = self.redis.hgetall(self.counts_key)
        counts, _ = split_hash({k.decode(): v.decode() for k, v in raw.items()})
        return {d: n for d, n in counts.items() if d.encode() in raw}

    def positions(self) -> dict[int, int]:
        """The aggregator's stored positions in the processed topic."""
        raw = self.redis.hgetall(self.counts_key)
        _, positions = split_hash({k.decode(): v.decode() for k, v in raw.items()})
        return positions.get(self.processed, {})

    def read_all(
        self,
        topic: str,
        expected: int | None = None,
        timeout: float = 60.0,
        isolation: str = "read_committed",
    ) -> list[Record]:
        """Every committed record of ``topic`` up to the end of each partition."""
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **self.kafka_client,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "isolation.level": isolation,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            # Wait until the high watermarks are stable and, if given, hold `expected` records.
            parts = [TopicPartition(topic, p, 0) for p in range(self.partitions)]
            c.assign(parts)
            records: list[Record] = []
            eof: set[int] = set()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = c.poll(0.2)
                if msg is None:
                    if len(eof) == self.partitions and (
                        expected is None or len(records) >= expected
                    ):
                        break
                    continue
                if msg.error():
                    if msg.error().code() == msg.error()._PARTITION_EOF:
                        eof.add(msg.partition())
                        continue
                    raise AssertionError(msg.error())
                eof.discard(msg.partition())
                records.append(
                    Record(
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        msg.key(),
                        msg.value(),
                        dict(msg.headers() or []),
                    )
                )
            return records
        finally:
            c.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, **self.kafka_client})
        try:
            tps = c.committed(
                [TopicPartition(topic, p) for p in range(self.partitions)], timeout=10
            )
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()

    def in_open_transaction(self) -> int:
        """Records of the output topics written by a transaction not ended yet, over every
        partition: each partition's high watermark less its last stable offset."""
        if self._admin is None:  # one client for every poll: made on first use, when
            # kafka_client holds whatever a secured broker needs
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.kafka_client})
        admin = self._admin
        tps = [
            TopicPartition(t, p)
            for t in (self.processed, self.errors)
            for p in range(self.partitions)
        ]

        def ends(isolation: IsolationLevel) -> dict[tuple[str, int], int]:
            futures = admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in tps},
                isolation_level=isolation,
                request_timeout=10,
            )
            return {(tp.topic, tp.partition): f.result(10).offset for tp, f in futures.items()}

        # The high watermarks first: a record below one of them and still above the stable
        # offset read after it is in a transaction open at that second reading.
        high = ends(IsolationLevel.READ_UNCOMMITTED)
        stable = ends(IsolationLevel.READ_COMMITTED)
        return sum(max(0, high[k] - stable[k]) for k in high)

    def produce_raw(
        self,
        records: list[tuple[bytes | None, bytes | None]],
        topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        p = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, **self.kafka_client}
        )
        for key, value in records:
            p.produce(topic or self.input, value, key, headers=headers)
        assert p.flush(30) == 0

    def close(self) -> None:
        for svc in self.services:
            svc.stop()


@pytest.fixture
def make_pipeline(
    kafka_bootstrap: str, redis_url: str, admin: AdminClient, tmp_path: Path
) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(partitions: int = 3) -> Pipeline:
        pl = Pipeline(kafka_bootstrap, redis_url, tmp_path, partitions)
        pl.create_topics(admin)
        made.append(pl)
        return pl

    yield make
    for pl in made:
        pl.close()
        for svc in pl.services:
            if svc.exits and svc.exits[-1] not in (0, -9):
                print(f"--- {svc.name} log ---\n{svc.log()[-5000:]}")
