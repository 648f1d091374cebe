"""The processes of one benchmark run: the mock upstream, the load generator, gateways and relays.

Owns every child and the run's temporary directory; starts them pinned per the CPU plan and stops them
at the end. After a gateway stops, reads its data dir back (the recording proof: every exchange the
generator completed is there, and was carried the way the scenario claims: TLS, HTTP/2, the caller's
identity). Writes the run's TLS material and callers' credentials. Measures nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.callers import AuthKind, Callers, write_callers
from benchmarks.certs import TlsFiles, write_tls_files
from benchmarks.loadjob import raise_nofile_limit
from benchmarks.procs import BenchError, Child, CpuPlan, JsonChannel, cpu_seconds, descendants, pin, spawn
from benchmarks.scenarios import BENCH_BEARER, PACED_MS
from benchmarks.upstream import UPSTREAMS
from gateway.config import ConfigError, load, validate
from parsers.events import ExchangeEnded, ExchangeStarted
from storage.reader import iter_frames

MAX_CONNECTIONS = 8192  # the gateway's default (1024) would refuse the idle-streams scenario
_LISTENING = re.compile(r"listening on https?://\S+?:(\d+) ->")
# What ExchangeStarted must show for a target's every exchange: the trait names count_recorded counts.
_IDENTITY_METHOD: dict[AuthKind, str] = {"apikey": "api-key", "oidc": "oidc"}


@dataclass
class Target:
    """Something the generator sends traffic to: direct, the floor, a gateway, another proxy."""

    name: str
    host: str
    ports: dict[str, int]  # by upstream kind: fast, paced, idle
    child: Child | None = None  # the process whose CPU and memory are measured
    pids: list[int] = field(default_factory=list)  # --against-pid: measured by pid alone
    data_dir: Path | None = None  # a recording gateway's data dir: what the proof reads
    sent: int = 0  # complete exchanges the generator saw through this target
    tls: bool = False  # the generator connects over TLS...
    ca: str | None = None  # ...trusting this CA (None: the system store)
    http: str = "h1"  # or "h2": streams multiplexed on few connections
    bearer: str = BENCH_BEARER  # the credential every request carries
    expect: tuple[str, ...] = ()  # traits every recorded exchange must show ("tls", "h2", "api-key"...)
    # Until Fleet.ready: reads the ports the starting process announces.
    announced: Callable[[Child], dict[str, int]] | None = field(default=None, repr=False, compare=False)

    def cpu_s(self) -> float | None:
        if self.child is not None:
            return self.child.cpu_s()
        if self.pids:
            return sum(cpu_seconds(pid) for pid in self.pids)
        return None


def count_recorded(data_dir: Path) -> tuple[Counter[str], Counter[str], int]:
    """Outcomes of the ``exchangeended`` frames in a data dir, the traits of its ``exchangestarted``
    frames (``tls``, ``h2``, the identity method), and how many frames it holds."""
    outcomes: Counter[str] = Counter()
    traits: Counter[str] = Counter()
    frames = 0
    for stored in iter_frames(data_dir):
        frames += 1
        event = stored.frame.event
        if isinstance(event, ExchangeEnded):
            outcomes[event.outcome] += 1
        elif isinstance(event, ExchangeStarted):
            traits["exchanges"] += 1
            if event.tls_version:
                traits["tls"] += 1
            if event.protocol == "h2":
                traits["h2"] += 1
            if event.identity.method != "none":
                traits[event.identity.method] += 1
    return outcomes, traits, frames


def _gateway_ports(child: Child) -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(ports) < len(UPSTREAMS):  # listeners print in config order; other lines are skipped
        found = _LISTENING.search(child.line(60))
        if found is not None:
            ports[UPSTREAMS[len(ports)]] = int(found.group(1))
    return ports


def _relay_ports(child: Child) -> dict[str, int]:
    return dict(zip(UPSTREAMS, map(int, json.loads(child.line(30))), strict=True))


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.is_dir() else 0


class Fleet:
    """``with Fleet(...) as fleet``: the mock and the load generator run until the block ends."""

    def __init__(self, cpus: CpuPlan, *, idle_ms: float, mock_port: int = 0) -> None:
        self.cpus = cpus
        self.idle_ms = idle_ms
        self.mock_port = mock_port
        self.workdir = Path(tempfile.mkdtemp(prefix="wardgate-bench-"))
        self.mock_ports: dict[str, int] = {}
        self.mock_tls_ports: dict[str, int] = {}
        self.tls_files: TlsFiles | None = None
        self.callers: Callers | None = None
        self._loadgen: JsonChannel | None = None
        self._children: list[Child] = []
        self._serial = 0

    def __enter__(self) -> Fleet:
        raise_nofile_limit()  # inherited by every child
        try:
            self._start_shared()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def loadgen(self) -> JsonChannel:
        if self._loadgen is None:
            raise BenchError("the load generator is not running")
        return self._loadgen

    def _spawn(self, name: str, argv: list[str], cpus: set[int] | None, *, stdin: bool = False) -> Child:
        child = spawn(name, argv, self.workdir, cpus, stdin=stdin)
        self._children.append(child)
        return child

    def _start_shared(self) -> None:
        self.tls_files = write_tls_files(self.workdir)
        self.callers = write_callers(self.workdir)
        args = [
            "--paced-ms",
            str(PACED_MS),
            "--idle-ms",
            str(self.idle_ms),
            "--base-port",
            str(self.mock_port),
            "--tls-cert",
            str(self.tls_files.cert),
            "--tls-key",
            str(self.tls_files.key),
        ]
        upstream = self._spawn("mock-upstream", _python("benchmarks.upstream", *args), self.cpus.upstream)
        ports = json.loads(upstream.line(30))
        self.mock_ports = {name: int(ports[name]) for name in UPSTREAMS}
        self.mock_tls_ports = {name: int(ports["tls"][name]) for name in UPSTREAMS}
        loadgen = self._spawn("loadgen", _python("benchmarks.loadgen"), self.cpus.loadgen, stdin=True)
        self._loadgen = JsonChannel(loadgen)
        self._loadgen.receive(30)  # hello: it is up and has raised its fd limit

    def own_cpu_s(self) -> float:
        """CPU time of this process and every child of the run so far (dead ones excluded)."""
        total = time.process_time()
        for child in self._children:
            try:
                total += child.cpu_s()
            except BenchError:
                continue  # exited between the list and the read
        return total

    @property
    def tls(self) -> TlsFiles:
        if self.tls_files is None:
            raise BenchError("the run's TLS files are not written yet")
        return self.tls_files

    def direct(self, *, tls: bool = False) -> Target:
        if tls:
            ca = str(self.tls.ca)
            return Target("direct-tls", "127.0.0.1", dict(self.mock_tls_ports), tls=True, ca=ca)
        return Target("direct", "127.0.0.1", dict(self.mock_ports))

    def against(self, url: str, pids: list[int], ca: str | None = None) -> Target:
        """Another proxy, already listening: URL's port forwards to fast, +1 to paced, +2 to idle.

        An https:// URL is a TLS proxy (its certificate verified against ``ca``, else the system store):
        it joins the TLS-on scenarios instead of the plain ones.

        Raises:
            BenchError: a malformed URL, or nothing listening on its port.
        """
        match = re.fullmatch(r"(https?)://([^/:]+|\[[^\]]+\]):(\d+)/?", url)
        if match is None:
            raise BenchError(f"--against: expected http://HOST:PORT or https://HOST:PORT, got {url!r}")
        tls = match.group(1) == "https"
        host, port = match.group(2).strip("[]"), int(match.group(3))
        ports = {}
        for i, name in enumerate(UPSTREAMS):
            with socket.socket() as sock:
                sock.settimeout(1.0)
                if sock.connect_ex((host, port + i)) == 0:
                    ports[name] = port + i
        if "fast" not in ports:
            raise BenchError(f"--against: nothing listening on {host}:{port}")
        return Target("against-tls" if tls else "against", host, ports, pids=pids, tls=tls, ca=ca)

    def ready(self, targets: list[Target]) -> None:
        """Wait until every started target listens, then pin it (and its children) to the target cores.

        Processes start unpinned and side by side: starting one is mostly imports, which may use every
        core. They are idle again before anything is measured.
        """
        for target in targets:
            if target.announced is None or target.child is None:
                continue
            target.ports = target.announced(target.child)
            target.announced = None
            for pid in [target.child.pid, *descendants(target.child.pid)]:
                pin(pid, self.cpus.target)

    def gateway(
        self,
        label: str,
        durability: str,
        *,
        workers: int = 1,
        tls: bool = False,
        http: str = "h1",
        auth: AuthKind | None = None,
        wait: bool = True,
    ) -> Target:
        """A fresh ``wardgate serve`` process (new data dir) with one listener per upstream kind.

        ``tls``: TLS listeners (``--tls-cert/--tls-key``, and in the config for every listener) and
        https:// upstreams verified against the run's CA. ``auth``: callers must present that credential.
        ``wait=False``: return while it starts; ``ready`` waits for it.
        """
        self._serial += 1
        data_dir = self.workdir / f"data-{self._serial:02d}-{label}"
        config = self.workdir / f"gateway-{self._serial:02d}.toml"
        files = self.tls
        listeners = ""
        for name in UPSTREAMS:
            listeners += f'[[listeners]]\nname = "{name}"\nlisten = "127.0.0.1:0"\n'
            if tls:
                listeners += (
                    f'upstream = "https://127.0.0.1:{self.mock_tls_ports[name]}"\n'
                    f'upstream_ca = "{files.ca}"\ntls_cert = "{files.cert}"\ntls_key = "{files.key}"\n\n'
                )
            else:
                listeners += f'upstream = "http://127.0.0.1:{self.mock_ports[name]}"\n\n'
        callers = self.callers
        if auth is not None and callers is None:
            raise BenchError("the run's callers are not written yet")
        # The admin listener stays on (as deployed) but on a free port: two gateways run side by side.
        config.write_text(
            f"{listeners}[limits]\nmax_connections = {MAX_CONNECTIONS}\n\n"
            f'[storage]\ndata_dir = "{data_dir}"\ndurability = "{durability}"\n\n'
            '[admin]\nlisten = "127.0.0.1:0"\n\n' + (callers.toml(auth) if auth and callers else "")
        )
        try:
            validate(load(config))
        except ConfigError as exc:
            raise BenchError(f"the gateway config the bench writes is no longer valid: {exc}") from None
        argv = _python(
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        )
        if tls:  # the flags set the first listener's files, as an operator would; the config has them all
            argv += ["--tls-cert", str(files.cert), "--tls-key", str(files.key)]
        child = self._spawn(f"gateway-{self._serial:02d}-{label}", argv, None)
        expect = (("tls",) if tls else ()) + (("h2",) if http == "h2" else ())
        expect += (_IDENTITY_METHOD[auth],) if auth else ()
        target = Target(
            label,
            "127.0.0.1",
            {},
            child=child,
            data_dir=data_dir,
            tls=tls,
            ca=str(files.ca) if tls else None,
            http=http,
            bearer=callers.bearer(auth) if auth and callers else BENCH_BEARER,
            expect=expect,
            announced=_gateway_ports,
        )
        if wait:
            self.ready([target])
        return target

    def relay(self, label: str, *, tls: bool = False, wait: bool = True) -> Target:
        """A fresh byte relay (the floor) with one listener per upstream kind; ``tls``: TLS on both sides."""
        self._serial += 1
        mock = self.mock_tls_ports if tls else self.mock_ports
        argv = _python("benchmarks.relay", *[f"127.0.0.1:{mock[name]}" for name in UPSTREAMS])
        if tls:
            files = self.tls
            argv += [
                "--tls-cert",
                str(files.cert),
                "--tls-key",
                str(files.key),
                "--upstream-ca",
                str(files.ca),
            ]
        child = self._spawn(f"relay-{self._serial:02d}-{label}", argv, None)
        ca = str(self.tls.ca) if tls else None
        target = Target(label, "127.0.0.1", {}, child=child, tls=tls, ca=ca, announced=_relay_ports)
        if wait:
            self.ready([target])
        return target

    def stop(self, targets: list[Target], proof: dict[str, dict[str, Any]], failures: list[str]) -> None:
        """Stop the targets' processes; add what each gateway recorded to ``proof``, then drop its data."""
        for target in targets:
            if target.child is not None:
                target.child.terminate()  # they drain side by side
        for target in targets:
            if target.child is None:
                continue
            code = target.child.stop()
            self._children.remove(target.child)
            if code != 0:
                failures.append(f"{target.child.name} exited with code {code}:\n{target.child.log_tail()}")
            if target.data_dir is None:
                continue
            outcomes, traits, frames = count_recorded(target.data_dir)
            entry = proof.setdefault(
                target.name,
                {"sent": 0, "recorded": 0, "other": 0, "frames": 0, "log_bytes": 0, "expect": {}},
            )
            entry["sent"] += target.sent
            complete = outcomes.pop("complete", 0)
            entry["recorded"] += complete
            for trait in target.expect:  # how many recorded exchanges show it; the runner checks all do
                entry["expect"][trait] = entry["expect"].get(trait, 0) + traits[trait]
            entry["other"] += sum(outcomes.values())
            entry["frames"] += frames
            entry["log_bytes"] += _dir_bytes(target.data_dir / "segments")
            shutil.rmtree(target.data_dir, ignore_errors=True)

    def close(self) -> None:
        if self._loadgen is not None:
            try:
                self._loadgen.stdin.write(b'{"op": "quit"}\n')
                self._loadgen.stdin.flush()
            except OSError:
                pass  # it is gone already; stop() below reaps it
        for child in self._children:
            child.terminate()
        for child in reversed(self._children):
            child.stop(timeout_s=10)
        self._children.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
