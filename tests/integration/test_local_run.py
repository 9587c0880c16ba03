"""`loginpipe run` (behind `make run`) and consumers side by side on one host, on the real broker.

`loginpipe run` must leave no child behind whatever the signals, let each metrics port be moved,
and pass a child's own exit code on. Two consumers on one host must share the input without
fencing each other, and a consumer fenced by another with its id must stop with a message that
names the setting.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from loginpipe.kafka_io import TransactionalIdClaim
from tests.integration.conftest import Pipeline, free_port, wait_for
from tests.integration.test_pipeline import assert_exactly_once, expected_run, generate_args

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class LocalRun:
    """`loginpipe run` as a user starts it, on the test's topics and free ports."""

    def __init__(self, pl: Pipeline, tmp: Path, ports: list[int], **env: str) -> None:
        self.ports = ports
        self.err_path = tmp / f"run-{pl.id}.err"
        self.out_path = tmp / f"run-{pl.id}.out"
        run_env = {k: v for k, v in pl.env.items() if k != "LOGINPIPE_METRICS_PORT"}
        run_env.update(env)
        with self.err_path.open("wb") as err, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loginpipe",
                    "run",
                    f"--partitions={pl.partitions}",
                    "--rate=300",
                    f"--metrics-ports={','.join(map(str, ports))}",
                    f"--log-dir={tmp / ('logs-' + pl.id)}",
                ],
                env=run_env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_running(self) -> list[int]:
        wait_for("loginpipe run to start its services", lambda: "pipeline running" in self.stderr())
        return wait_for(
            "three child processes",
            lambda: len(children_of(self.proc.pid)) == 3 and children_of(self.proc.pid),
        )

    def finish(self, timeout: float = 90) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def local_run(tmp_path: Path):
    made: list[LocalRun] = []

    def make(pl: Pipeline, ports: list[int] | None = None, **env: str) -> LocalRun:
        run = LocalRun(pl, tmp_path, ports or [free_port(), free_port(), free_port()], **env)
        made.append(run)
        return run

    yield make
    for run in made:
        run.kill()


def flowing(make_pipeline, local_run) -> tuple[Pipeline, LocalRun, list[int]]:
    """A `loginpipe run` whose events have reached Redis, and its three children."""
    pl = make_pipeline(partitions=3)
    run = local_run(pl)
    kids = run.wait_running()
    wait_for("counts in Redis", lambda: sum(pl.counts().values()) > 0, timeout=60)
    return pl, run, kids


def test_a_second_ctrl_c_kills_every_child_and_exits_130(make_pipeline, local_run) -> None:
    _, run, kids = flowing(make_pipeline, local_run)
    run.proc.send_signal(signal.SIGINT)
    wait_for("the first Ctrl-C to be taken", lambda: "stopping (again to kill)" in run.stderr())
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 130, run.stderr()
    wait_for("every child to be gone", lambda: not any(alive(p) for p in kids), timeout=10)


def test_one_ctrl_c_stops_every_child_in_order_and_exits_0(make_pipeline, local_run) -> None:
    pl, run, kids = flowing(make_pipeline, local_run)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0, run.stderr()
    assert not any(alive(p) for p in kids)
    assert "stopped; counts:" in run.stderr()
    # Stopped upstream first: what the generator produced was routed and counted, to the event.
    counted = orjson.loads(run.stderr().split("stopped; counts:")[1].strip().splitlines()[0])
    processed = pl.read_all(pl.processed)
    assert sum(counted.values()) == len(processed) > 0


def test_the_children_die_with_the_parent_even_on_sigkill(make_pipeline, local_run) -> None:
    pl = make_pipeline(partitions=3)
    run = local_run(pl)
    kids = run.wait_running()
    run.proc.kill()
    run.proc.wait(10)
    wait_for("every child to be gone", lambda: not any(alive(p) for p in kids), timeout=60)


def test_a_taken_metrics_port_fails_before_anything_starts_and_says_how_to_move_it(
    make_pipeline, local_run
) -> None:
    pl = make_pipeline(partitions=3)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where the services listen by default
        taken.listen()
        port = taken.getsockname()[1]
        run = local_run(pl, [free_port(), free_port(), port])
        assert run.finish() == 2, run.stderr()
    err = run.stderr()
    assert f"port {port} for the aggregator's metrics" in err
    assert "METRICS_PORTS=" in err and "--metrics-ports" in err
    assert "Traceback" not in err


def test_each_port_is_the_one_asked_for(make_pipeline, local_run) -> None:
    import urllib.request

    pl = make_pipeline(partitions=3)
    ports = [free_port(), free_port(), free_port()]
    run = local_run(pl, ports)
    run.wait_running()
    for port, job in zip(ports, ("generator", "consumer", "aggregator"), strict=True):
        body = wait_for(
            f"the {job}'s metrics on :{port}",
            lambda port=port: _get(urllib.request, f"http://127.0.0.1:{port}/metrics"),
        )
        assert f'component="{job}"'.encode() in body, body[:500]
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0


def _get(urllib_request, url: str) -> bytes | None:
    try:
        with urllib_request.urlopen(url, timeout=2) as resp:  # loopback only
            return resp.read()
    except OSError:
        return None


def test_loginpipe_metrics_port_is_refused_under_run_with_what_to_set(
    make_pipeline, local_run
) -> None:
    pl = make_pipeline(partitions=3)
    run = local_run(pl, LOGINPIPE_METRICS_PORT="9999")
    assert run.finish() == 2
    assert "LOGINPIPE_METRICS_PORT does not apply" in run.stderr()
    assert "METRICS_PORTS=" in run.stderr()


def test_a_childs_own_exit_code_is_passed_on_with_its_message(make_pipeline, local_run) -> None:
    pl = make_pipeline(partitions=3)
    # Another consumer on this host holds the id: the run's consumer must exit 2, and so the run.
    holder = TransactionalIdClaim(pl.env["LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"], "unused")
    try:
        run = local_run(pl)
        assert run.finish() == 2, run.stderr()
    finally:
        holder.release()
    err = run.stderr()
    assert "consume exited with code 2" in err
    assert "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID" in err
    assert "unavailable" not in err


# ---- consumers side by side ---------------------------------------------------------------


def test_two_consumers_on_one_host_with_default_ids_share_the_work_exactly_once(
    make_pipeline,
) -> None:
    pl = make_pipeline(partitions=4)
    env = {k: v for k, v in pl.env.items() if k != "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"}
    pl.env = env
    first = pl.service("consumer-a", "consume").start()
    second = pl.service("consumer-b", "consume").start()
    pl.service("aggregator", "aggregate").start()
    ids = []
    for svc in (first, second):
        line = wait_for(
            f"{svc.name} to start",
            lambda svc=svc: next(
                (x for x in svc.log().splitlines() if "consumer started" in x), None
            ),
        )
        ids.append(line.split("transactional_id=")[1].split()[0].strip('"'))
    assert ids[0] != ids[1], ids
    gen = pl.run_cli(*generate_args())
    assert gen.returncode == 0, gen.stderr
    assert_exactly_once(pl)
    assert first.running() and second.running(), first.log()[-2000:] + second.log()[-2000:]
    assert "fenced" not in first.log() + second.log()


def test_a_fenced_consumer_stops_with_a_message_naming_the_setting(make_pipeline) -> None:
    pl = make_pipeline(partitions=3)
    consumer = pl.service("consumer", "consume").start()
    wait_for("the consumer to join", lambda: "partitions assigned" in consumer.log())
    # Another host starts a producer with the same transactional id: it fences the consumer.
    other = Producer(
        {
            "bootstrap.servers": pl.bootstrap,
            "transactional.id": pl.env["LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"],
        }
    )
    other.init_transactions(30)
    truth, _ = expected_run(200)
    gen = pl.run_cli(*generate_args(count=200))
    assert gen.returncode == 0, gen.stderr
    assert consumer.wait(60) == 2, consumer.log()[-3000:]
    log = consumer.log()
    assert "LOGINPIPE_CONSUMER_TRANSACTIONAL_ID" in log
    assert "Traceback" not in log
    # Nothing the fenced consumer routed was committed: the input is still all there to route.
    assert pl.read_all(pl.processed) == []
    assert truth.valid > 0


def test_a_producer_fatal_error_is_traced_to_its_fencing(make_pipeline) -> None:
    # Once fenced, librdkafka's produce() says only "_FATAL"; the consumer must still see that
    # it was fenced (and so exit 2 naming the setting), whichever call met the error first.
    from confluent_kafka import KafkaError, KafkaException

    from loginpipe.commit_window import TransactionalWindow
    from loginpipe.metrics import Metrics
    from loginpipe.runtime import Health, Stopper

    pl = make_pipeline(partitions=1)
    txn_id = f"fence-probe-{pl.id}"
    fenced = Producer({"bootstrap.servers": pl.bootstrap, "transactional.id": txn_id})
    fenced.init_transactions(30)
    fenced.begin_transaction()
    fenced.produce(pl.input, b"x")
    assert fenced.flush(30) == 0
    newer = Producer({"bootstrap.servers": pl.bootstrap, "transactional.id": txn_id})
    newer.init_transactions(30)

    def produce_until_fatal() -> KafkaError | None:
        try:
            fenced.produce(pl.errors, b"y")
            fenced.poll(0.1)
        except KafkaException as exc:
            return exc.args[0] if exc.args[0].code() == KafkaError._FATAL else None
        return None

    generic = wait_for("produce() to report the generic fatal error", produce_until_fatal, 30)
    metrics = Metrics("consumer")
    window = TransactionalWindow(
        transaction_timeout_ms=60_000,
        init_timeout_seconds=10,
        consumer=None,  # type: ignore[arg-type]
        producer_config={},
        producer_factory=lambda conf: fenced,
        input_topic=pl.input,
        output_topics=(pl.processed, pl.errors),
        metrics=metrics,
        health=Health(metrics),
        stopper=Stopper(),
        failure_budget_seconds=120,
    )
    assert window.underlying(generic).code() == KafkaError._FENCED
