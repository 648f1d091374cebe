"""Child processes of a benchmark run and their accounting: CPU time, RSS, core pinning, JSON lines.

CPU time is read from the kernel's per-process CPU clock (nanoseconds, every thread of the process,
exited ones included), falling back to /proc/<pid>/stat ticks; memory from /proc/<pid>/status. Nothing
here interprets what the children do; the runner decides what to start and what to measure.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run cannot go on or its figures cannot be trusted; the message says which process and why."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far.

    Raises:
        BenchError: the process is gone.
    """
    try:
        # Linux MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): the precise clock behind clock_getcpuclockid.
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise BenchError(f"process {pid} is gone: {exc}") from None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def descendants(pid: int) -> list[int]:
    """Live child processes, recursively, from /proc/<pid>/task/<tid>/children."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            found.append(child)
            found.extend(descendants(child))
    return found


def _quiet_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except BenchError:
        return 0.0  # exited between listing and reading


def machine_busy_s() -> float:
    """CPU time all cores have spent running processes since boot (user, nice, system).

    Interrupt and softirq time is left out: loopback TCP is processed there, for our own traffic too.
    """
    with open("/proc/stat") as f:
        user, nice, system = (int(v) for v in f.readline().split()[1:4])
    return (user + nice + system) / _CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
    except OSError as exc:
        raise BenchError(f"process {pid} is gone: {exc}") from None
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where the kernel refuses."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of a process to ``cpus`` (threads it starts later inherit the mask)."""
    if not cpus:
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue  # a thread that just exited


@dataclass(frozen=True)
class CpuPlan:
    """Which cores each role runs on; None means unpinned."""

    loadgen: set[int] | None
    target: set[int] | None  # the gateway, the relay floor
    upstream: set[int] | None
    note: str


def plan_cpus(available: set[int] | None = None) -> CpuPlan:
    cores = sorted(available if available is not None else os.sched_getaffinity(0))
    if len(cores) == 1:
        return CpuPlan(None, None, None, "1 core: generator, gateway and mock share it (figures are rough)")
    if len(cores) == 2:
        return CpuPlan(
            {cores[0]},
            {cores[1]},
            None,
            f"2 cores: generator on cpu{cores[0]}, gateway/floor on cpu{cores[1]}, "
            "mock unpinned (shares both)",
        )
    rest = set(cores[2:])
    return CpuPlan(
        {cores[0]},
        {cores[1]},
        rest,
        f"{len(cores)} cores: generator on cpu{cores[0]}, gateway/floor on cpu{cores[1]}, "
        f"mock on cpu{min(rest)}-{max(rest)}",
    )


def isolate_target(available: set[int] | None = None) -> CpuPlan:
    """For profiling: the gateway alone on its core, everything else on the others.

    Sampling profilers count a thread that was preempted as busy; with the mock sharing the gateway's
    core, every system call (where preemption happens) would look expensive.
    """
    cores = sorted(available if available is not None else os.sched_getaffinity(0))
    if len(cores) < 2:
        return plan_cpus(set(cores))
    rest = set(cores[:-1])
    return CpuPlan(rest, {cores[-1]}, rest, f"gateway alone on cpu{cores[-1]}, all else on the other cores")


class LineReader:
    """Reads JSON lines from a child's stdout with a timeout (the child may hang; we must not)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is None:
            raise ValueError("the child needs stdout=PIPE")
        self.name = name
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def line(self, timeout_s: float) -> str:
        """Raises: BenchError when the child exits or stays silent for ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout_s:.0f} s")
            if not self.selector.select(min(left, 1.0)):
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise BenchError(f"{self.name}: exited (code {self.proc.wait()}) before answering")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self) -> None:
        self.selector.close()


@dataclass
class Child:
    """One process the run started: its stdout is a line channel, its stderr goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    reader: LineReader = field(init=False)
    terminated: bool = field(default=False, init=False)  # SIGTERM sent: it is draining

    def __post_init__(self) -> None:
        self.reader = LineReader(self.name, self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        """The process's CPU time plus its live descendants' (the gateway's index follower is one)."""
        return cpu_seconds(self.pid) + sum(_quiet_cpu(pid) for pid in descendants(self.pid))

    def indexer_cpu_s(self) -> float:
        """The CPU time of its ``index-follow`` descendants: indexing, off the connection path."""
        total = 0.0
        for pid in descendants(self.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"index-follow" not in f.read():
                        continue
            except OSError:
                continue
            total += _quiet_cpu(pid)
        return total

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.pid)

    def line(self, timeout_s: float) -> str:
        """The child's next stdout line.

        Raises:
            BenchError: it exited or stayed silent; the message ends with its last log lines.
        """
        try:
            return self.reader.line(timeout_s)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log ends:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM, once: several children drain at the same time, then ``stop`` waits for each."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (unless ``terminate`` sent it), wait; SIGKILL after ``timeout_s``; the exit code."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return self.proc.returncode


def spawn(name: str, argv: list[str], log_dir: Path, cpus: set[int] | None, *, stdin: bool = False) -> Child:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # a Ctrl-C reaches the orchestrator only; it stops the children
        )
    pin(proc.pid, cpus)
    return Child(name, proc, log_path)


def wait_quiet(
    child: Child, *, window_s: float = 0.1, busy_below: float = 0.03, limit_s: float = 120.0
) -> tuple[float, bool]:
    """Wait until the child is nearly idle (its deferred work, e.g. indexing, done).

    Idle means: less than ``busy_below`` of a core used over the last ``window_s``. Returns its CPU
    time then, and False if it was still busy after ``limit_s`` (the figure would be too low).
    """
    deadline = time.monotonic() + limit_s
    last = child.cpu_s()
    while True:
        time.sleep(window_s)
        now = child.cpu_s()
        if now - last < busy_below * window_s:
            return now, True
        if time.monotonic() > deadline:
            return now, False
        last = now


class JsonChannel:
    """Commands to a child as JSON lines on its stdin; answers, progress included, on its stdout."""

    def __init__(self, child: Child) -> None:
        if child.proc.stdin is None:
            raise ValueError("the child needs stdin=PIPE")
        self.child = child
        self.stdin = child.proc.stdin

    def receive(self, timeout_s: float) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.child.line(timeout_s))
        if "error" in message:
            raise BenchError(f"{self.child.name}: {message['error']}")
        return message

    def send(self, command: dict[str, Any]) -> None:
        """One command, no answer awaited (a "go" while a request is under way)."""
        self.stdin.write(json.dumps(command).encode() + b"\n")
        self.stdin.flush()

    def request(
        self,
        command: dict[str, Any],
        *,
        timeout_s: float,
        on_message: Callable[[dict[str, Any]], None] = lambda m: None,
    ) -> dict[str, Any]:
        """Send one command; pass progress and ready messages to ``on_message``; return the result.

        Raises:
            BenchError: the child exited, went silent for ``timeout_s``, or reported an error.
        """
        self.send(command)
        while True:
            message = self.receive(timeout_s)
            if "result" in message:
                result: dict[str, Any] = message["result"]
                return result
            on_message(message)
