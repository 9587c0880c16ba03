"""The broker confined to a share of one CPU: the load point where Kafka is the bottleneck.

On a small machine the broker shares the cores with the contender, and how fast it answers
the transaction calls decides how long a commit stalls the consumer. Confining the local
broker (``make infra-up``'s, found by its pid file) to a CPU quota with a cgroup makes the
broker the bottleneck on purpose and reproducibly: its requests queue, commits take hundreds
of milliseconds, as on a slower or busier machine.

Needs write access to the cgroup file system (root, as in CI); otherwise the phase is
skipped with the reason. The broker is moved back to its own cgroup afterwards, also when
the phase fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.context import ROOT

CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class Unavailable(Exception):
    """The broker cannot be confined here; the message says why."""


def broker_pid(bootstrap: str) -> int:
    """The pid of the project's local broker listening on ``bootstrap``'s port."""
    port = bootstrap.rsplit(":", 1)[-1]
    pid_file = ROOT / ".cache" / "run" / f"kafka-{port}" / "kafka.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        raise Unavailable(
            f"no local broker of this project on port {port} ({pid_file.relative_to(ROOT)}): "
            "the phase confines the broker `make infra-up` started"
        ) from None
    if b"kafka.Kafka" not in cmdline:
        raise Unavailable(f"pid {pid} from {pid_file} is not a Kafka broker")
    return pid


def _own_group(pid: int, v1: bool) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if (v1 and "cpu" in controllers.split(",")) or (not v1 and hid == "0"):
            return (CGROUP_V1 if v1 else CGROUP_V2) / path.lstrip("/")
    raise Unavailable(f"pid {pid} is in no cpu cgroup")


@contextlib.contextmanager
def confined(bootstrap: str, cpus: float, name: str) -> Iterator[None]:
    """Run the block with the broker limited to ``cpus`` of one CPU (cgroup cpu quota)."""
    pid = broker_pid(bootstrap)
    quota = max(1000, round(cpus * PERIOD_US))
    v1 = (CGROUP_V1 / "cpu.cfs_quota_us").exists()
    if not v1 and not (CGROUP_V2 / "cgroup.controllers").exists():
        raise Unavailable("no cgroup cpu controller mounted at /sys/fs/cgroup")
    home = _own_group(pid, v1)
    group = (CGROUP_V1 if v1 else CGROUP_V2) / name
    try:
        group.mkdir(exist_ok=True)
        if v1:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        with contextlib.suppress(OSError):
            group.rmdir()
        raise Unavailable(f"cannot confine the broker with a cgroup ({exc}): run as root") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            (home / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
