"""A contender in its own process, measured from the outside.

CPU time is sampled from ``/proc/<pid>/stat`` (every thread of the process) every 50 ms, so
the CPU spent inside a measured window can be read off. Peak RSS is the kernel's high-water
mark of the process's resident set, ``VmHWM`` in ``/proc/<pid>/status``, read at the same
pace (the last reading before exit). Not ``ru_maxrss`` from ``wait4``: Linux carries the
parent's high-water mark into a child across fork (vfork) and exec, so every child would
report at least the benchmark's own size. At exit the process is reaped with ``os.wait4``,
whose resource usage gives its total CPU time.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY = 0.05


def _proc_sample(pid: int) -> tuple[float, int, int] | None:
    """(user + system CPU seconds, resident bytes, peak resident bytes) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, rss (pages) 24.
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = 0
    i = status.find(b"\nVmHWM:")
    if i >= 0:  # "VmHWM:\t   51200 kB"; absent once the process is a zombie
        hwm = int(status[i + 7 : status.index(b"\n", i + 1)].split()[0]) * 1024
    return cpu, int(fields[21]) * PAGE, hwm


class Proc:
    """Starts ``argv`` in a new session, stdout and stderr to files under ``logdir``."""

    started_procs: list[Proc] = []  # noqa: RUF012 - every process started, for stop_all()

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        logdir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
    ) -> None:
        self.name = name
        self.argv = argv
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
        self.stdout_path = logdir / f"{slug}.out"
        self.log_path = logdir / f"{slug}.log"
        with open(self.stdout_path, "wb") as out, open(self.log_path, "wb") as err:
            self.popen = subprocess.Popen(  # noqa: S603 - our own argv
                argv, env=env, cwd=cwd, stdin=stdin, stdout=out, stderr=err, start_new_session=True
            )
        self.pid = self.popen.pid
        Proc.started_procs.append(self)
        self.started = time.time()
        self.samples_t: list[float] = []
        self.samples_cpu: list[float] = []
        self.rss = 0
        self.hwm = 0
        self.rusage: Any = None
        self.returncode: int | None = None
        self.ended: float | None = None
        self._lock = threading.Lock()
        self._sampler = threading.Thread(target=self._sample_loop, name=f"cpu-{name}", daemon=True)
        self._sampler.start()

    # ---- sampling ----------------------------------------------------------------------
    def _sample_loop(self) -> None:
        while True:
            with self._lock:
                if self.rusage is not None:
                    return
                got = _proc_sample(self.pid)
                if got is not None:
                    self.samples_t.append(time.time())
                    self.samples_cpu.append(got[0])
                    self.rss = got[1]
                    self.hwm = max(self.hwm, got[2])
            time.sleep(SAMPLE_EVERY)

    @property
    def cpu_now(self) -> float:
        return self.samples_cpu[-1] if self.samples_cpu else 0.0

    def cpu_at(self, t: float) -> float:
        """CPU seconds used up to wall time ``t`` (linear between samples)."""
        ts, cs = self.samples_t, self.samples_cpu
        if not ts:
            return 0.0
        i = bisect.bisect_left(ts, t)
        if i == 0:
            return cs[0]
        if i >= len(ts):
            return cs[-1]
        t0, t1, c0, c1 = ts[i - 1], ts[i], cs[i - 1], cs[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

    def cpu_between(self, t0: float, t1: float) -> float:
        return max(0.0, self.cpu_at(t1) - self.cpu_at(t0))

    # ---- life ----------------------------------------------------------------------------
    def poll(self) -> int | None:
        """The exit code if the process has ended (reaping it), else None."""
        if self.returncode is not None:
            return self.returncode
        pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._reaped(status, rusage)
        return self.returncode

    def _reaped(self, status: int, rusage: Any) -> None:
        with self._lock:
            self.rusage = rusage
            self.ended = time.time()
            self.returncode = os.waitstatus_to_exitcode(status)
            # Popen must not try to reap it again.
            self.popen.returncode = self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.poll()
            if rc is not None:
                return rc
            time.sleep(0.02)
        return self.poll()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL as a last resort; always reaps."""
        if self.poll() is None:
            self._signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self._signal(signal.SIGKILL)
                _, status, rusage = os.wait4(self.pid, 0)
                self._reaped(status, rusage)
        assert self.returncode is not None
        return self.returncode

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every process started that is still running (on an error or Ctrl-C)."""
        for p in cls.started_procs:
            p.stop(10.0)
        cls.started_procs = []

    @property
    def cpu_total(self) -> float | None:
        if self.rusage is None:
            return None
        return float(self.rusage.ru_utime + self.rusage.ru_stime)

    @property
    def peak_rss_bytes(self) -> int | None:
        return self.hwm or None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
