"""One worker process of a multi-process gateway: ``wardgate worker``, started by ``gateway.supervisor``.

The supervisor writes one JSON ``WorkerSpec`` line to the worker's stdin and keeps the pipe open: EOF
means the supervisor is gone, and the worker drains and stops as on SIGTERM. The worker prints one
``ready admin=HOST:PORT`` line on stdout once it serves (its own admin listener, which the supervisor
scrapes). It never takes the data-dir lock: it inherited the supervisor's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import msgspec
import uvloop

from gateway.config import Config
from gateway.server import Gateway, WorkerRole

logger = logging.getLogger("wardgate.worker")

READY = b"ready"


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker needs: the config (admin listener already set to its private one), its
    number (= its segment series), how many workers there are, and its inherited listening sockets."""

    config: Config
    worker: int
    workers: int
    listen_fds: list[int]
    log_level: str = "info"


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="one gateway worker process (`serve --workers N` runs these itself)",
        description="Serve as one worker of a supervisor; reads its spec from stdin.",
    )
    p.set_defaults(func=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    spec = msgspec.json.decode(sys.stdin.buffer.readline(), type=WorkerSpec)
    logging.basicConfig(
        level=spec.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[w{spec.worker}]: %(message)s",
        stream=sys.stderr,
    )
    return uvloop.run(_serve(spec))


async def _serve(spec: WorkerSpec) -> int:
    def ready(gw: Gateway) -> None:
        host, port = gw.admin_address or ("", 0)
        sys.stdout.buffer.write(b"%s admin=%s:%d\n" % (READY, host.encode(), port))
        sys.stdout.flush()

    role = WorkerRole(series=spec.worker, workers=spec.workers, listen_fds=spec.listen_fds)
    # The environment (inherited from the supervisor) holds the upstream credential's variable, if any.
    gateway = Gateway(spec.config, on_ready=ready, worker=role, environ=os.environ)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop)  # first: drain; second: cut
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_tls)
    supervisor = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(supervisor), sys.stdin)

    async def stop_when_orphaned() -> None:
        while await supervisor.read(4096):
            pass
        logger.warning("the supervisor is gone: draining and stopping")
        gateway.stop()

    watcher = asyncio.ensure_future(stop_when_orphaned())
    try:
        await gateway.run()
    finally:
        watcher.cancel()
    return 0


__all__ = ["READY", "WorkerSpec", "add_command"]
