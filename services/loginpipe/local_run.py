"""``loginpipe run``: the three services as child processes on one machine, with live counts.

The children are the real services (``python -m loginpipe consume`` and so on), each in its own
session so a terminal's Ctrl-C reaches only this parent, which then stops them in order:
the generator first, then the consumer (it commits what it routed), then the aggregator (it
counts what was committed). A second Ctrl-C (or SIGTERM) kills what is still running. Each
child also gets SIGTERM from the kernel if this parent dies in any way (``PR_SET_PDEATHSIG``),
SIGKILL included, so no child outlives it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from loginpipe.exceptions import ConfigError, LoginpipeError

# Start order (the consumer and aggregator wait in their groups before events flow) and the
# reverse of the stop order. Each has its own metrics port; all three can be moved.
SERVICES = ("consume", "aggregate", "generate")
STOP_ORDER = ("generate", "consume", "aggregate")
ROLES = {"generate": "generator", "consume": "consumer", "aggregate": "aggregator"}
DEFAULT_PORTS = {"generate": 9101, "consume": 9102, "aggregate": 9103}
PORTS_HINT = (
    "choose free ones with `make run METRICS_PORTS=G,C,A` "
    "(`loginpipe run --metrics-ports G,C,A`, 0 disables one)"
)
STOP_TIMEOUT = 60.0  # above the consumer's own 30 s commit/abort limit
_PR_SET_PDEATHSIG = 1


class ChildFailed(LoginpipeError):
    """A service exited on its own; ``code`` is its exit code, passed on by ``loginpipe run``."""

    def __init__(self, name: str, code: int, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.code = code


def parse_ports(text: str) -> dict[str, int]:
    """``G,C,A`` -> the generator's, consumer's and aggregator's metrics ports."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 65535 for p in parts):
        raise ConfigError(
            f"--metrics-ports {text!r} is not three ports: give G,C,A for the generator, "
            "consumer and aggregator, e.g. 9101,9102,9103 (0 disables one)"
        )
    ports = dict(zip(STOP_ORDER, map(int, parts), strict=True))
    used = [p for p in ports.values() if p]
    if len(used) != len(set(used)):
        raise ConfigError(f"--metrics-ports {text!r} repeats a port: the three must differ")
    return ports


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """Fail before starting anything if a metrics port is taken, naming the way to move it."""
    for name, port in ports.items():
        if not port:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise ConfigError(
                    f"port {port} for the {ROLES[name]}'s metrics on {host} is {why}: " + PORTS_HINT
                ) from None


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends SIGTERM when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


@dataclass
class Supervisor:
    """Starts the children, watches them, and stops every one of them whatever happens."""

    env: Mapping[str, str]
    ports: Mapping[str, int]
    logdir: Path

    def __post_init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = threading.Event()
        self.hurry = False

    # ---- signals ------------------------------------------------------------------------
    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stop.is_set():
            sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping (again to kill)\n")
            self.stop.set()
            return
        self.hurry = True  # a second signal: kill what still runs, never leave it behind
        self.kill_all()

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()

    # ---- start, watch, stop -------------------------------------------------------------
    def start(self, name: str) -> None:
        env = dict(self.env)
        env["LOGINPIPE_METRICS_PORT"] = str(self.ports[name])
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.logdir / f"{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "loginpipe", name],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # prctl only, no locks taken
            )

    def check_children(self) -> None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                log = self.logdir / f"{name}.log"
                raise ChildFailed(
                    name,
                    code,
                    f"{name} exited with code {code}: {log_tail(log) or '(no output)'} "
                    f"(full log: {log})",
                )

    def stop_all(self, say: Callable[[str], Any]) -> None:
        """Upstream first, each to its end; a second signal (``hurry``) kills the rest."""
        for name in STOP_ORDER:
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None and not self.hurry:
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while proc.poll() is None:
                if self.hurry or time.monotonic() > deadline:
                    if not self.hurry:
                        say(f"{name} did not stop in {STOP_TIMEOUT:.0f}s: killed")
                    proc.kill()
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    continue


def run_pipeline(
    env: Mapping[str, str],
    ports: Mapping[str, int],
    logdir: Path,
    read_counts: Callable[[], dict[str, int]],
    out: Any = None,
) -> int:
    """Run until a signal or a child's exit; 0 after a clean stop, 130 after a second signal."""
    out = out or sys.stdout
    sup = Supervisor(env, ports, logdir)
    sup.install_signals()
    shown = ", ".join(
        f":{ports[n]} {ROLES[n]}" if ports[n] else f"{ROLES[n]} off" for n in STOP_ORDER
    )
    tty = out.isatty()
    try:
        for name in SERVICES:
            sup.start(name)
        sys.stderr.write(
            f"pipeline running (logs in {logdir}/, metrics on {shown}); Ctrl-C stops\n"
            f"counts grow at the valid share of the generator's rate; a line every "
            f"{'second' if tty else '5 s'}\n"
        )
        last: tuple[int, float] | None = None
        started = time.monotonic()
        while not sup.stop.is_set():
            sup.check_children()
            counts = read_counts()
            total = sum(counts.values())
            now = time.monotonic()
            rate = (total - last[0]) / (now - last[1]) if last else 0.0
            last = (total, now)
            line = (
                f"[{now - started:6.0f}s] "
                + "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                + f"  total={total}  ({rate:,.0f}/s)"
            )
            out.write(("\r" + line) if tty else (line + "\n"))
            out.flush()
            sup.stop.wait(1.0 if tty else 5.0)
    finally:
        out.write("\n")
        sup.stop_all(lambda text: sys.stderr.write(text + "\n"))
        try:
            sys.stderr.write("stopped; counts: " + json.dumps(read_counts(), sort_keys=True) + "\n")
        except Exception as exc:  # Redis gone: the children are stopped all the same
            sys.stderr.write(f"stopped; counts unavailable ({exc})\n")
    return 130 if sup.hurry else 0
