"""What every service shares: logging, the stop flag and signals, the HTTP endpoint."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loginpipe.metrics import Metrics

log = logging.getLogger("loginpipe")


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, with the structured fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Stopper:
    """The stop flag. Signal handlers only set it; loops check it between short polls.

    A second SIGINT/SIGTERM exits at once (exit code 130), for a stuck shutdown.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._event.is_set():
            log.warning("second %s: exiting now", name)
            sys.stderr.flush()
            raise SystemExit(130)
        self.signal_name = name
        log.info("received %s: stopping", name)
        self._event.set()

    def stop(self) -> None:
        self._event.set()

    @property
    def stopping(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on stop; True if stopping."""
        return self._event.wait(seconds)


class Health:
    """Liveness and readiness as the service loop reports them.

    Live while the loop has beaten within ``stall_seconds``; ready once the service says so.
    """

    def __init__(self, metrics: Metrics, stall_seconds: float = 60.0) -> None:
        self.metrics = metrics
        self.stall_seconds = stall_seconds
        self._beat: float | None = None  # until the main loop starts, start-up is bounded
        self._ready = False  # by its own timeouts (LOGINPIPE_STARTUP_TIMEOUT_SECONDS)
        self._reason = "starting"

    def beat(self) -> None:
        self._beat = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self._reason = reason
        self.metrics.up.set(1 if ready else 0)

    def live(self) -> tuple[bool, str]:
        if self._beat is None:
            return True, "starting"
        age = time.monotonic() - self._beat
        if age > self.stall_seconds:
            return False, f"main loop stalled for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        return self._ready, "ok" if self._ready else self._reason


def serve_http(
    host: str, port: int, metrics: Metrics, health: Health
) -> ThreadingHTTPServer | None:
    """Start /metrics, /healthz and /readyz on a daemon thread. Port 0 disables it."""
    if port == 0:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                ok, why = health.live()
                self._send(200 if ok else 503, why.encode() + b"\n")
            elif path == "/readyz":
                ok, why = health.ready()
                self._send(200 if ok else 503, why.encode() + b"\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet access log
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        from loginpipe.exceptions import ConfigError

        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror}): set LOGINPIPE_METRICS_PORT to a "
            "free port, or 0 to disable the endpoint"
        ) from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("serving /metrics, /healthz and /readyz", extra={"port": server.server_port})
    return server
