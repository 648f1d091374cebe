"""The ``wardgate`` command line. The only place that reads flags, config files and signals.

Bad input fails at startup with one line naming what was wrong, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop

from benchmarks import cli as bench_cli
from gateway import approvals_cli, identity, indexer, inspect, keys, mock_llm, retention, worker
from gateway.config import Config, ConfigError, apply_flags, load, validate
from gateway.server import Gateway
from gateway.supervisor import Supervisor
from storage.errors import DataDirBusy, StorageError

logger = logging.getLogger("wardgate")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gateway", description="Run the recording gateway.")
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--listen", help="HOST:PORT to accept clients on (default 127.0.0.1:8080)")
    p.add_argument(
        "--upstream", help="http[s]://HOST:PORT of the model server (default http://127.0.0.1:8000)"
    )
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key; re-read on SIGHUP)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it verifies (mTLS)")
    p.add_argument("--data-dir", help="where the session log and index live (default ./wardgate-data)")
    p.add_argument("--durability", choices=["strict", "batched"], help="when frames reach the disk")
    p.add_argument(
        "--admin-listen", help='HOST:PORT for /healthz /readyz /metrics (default 127.0.0.1:9900, "" off)'
    )
    p.add_argument(
        "--workers",
        type=_positive,
        help="worker processes sharing the listeners, each with its own log series "
        "(default: the number of CPUs; 1 = one process, no supervisor)",
    )
    p.add_argument(
        "--upstream-credential-env", help="environment variable holding the model's API key (the gateway's)"
    )
    p.add_argument("--upstream-credential-file", help="file holding the model's API key")
    p.add_argument(
        "--upstream-credential-header", help='header the key goes in (default "Authorization: Bearer")'
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


def _serve(args: argparse.Namespace) -> int:
    config = validate(apply_flags(load(args.config), args))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    workers = args.workers or os.cpu_count() or 1
    if workers > 1:
        return uvloop.run(_supervise(config, workers, args.log_level))
    return uvloop.run(_serve_async(config))


def _print_ready(config: Config, gw: Gateway | Supervisor) -> None:
    for (host, port), listener in zip(gw.addresses, config.listeners, strict=True):
        scheme = "https" if listener.tls_cert else "http"
        print(
            f"wardgate: listening on {scheme}://{host}:{port} -> {listener.upstream} "
            f"(data dir {config.data_dir}, durability {config.storage.durability})",
            flush=True,
        )
    if gw.admin_address:
        host, port = gw.admin_address
        print(f"wardgate: admin (health, metrics) on http://{host}:{port}", flush=True)


async def _supervise(config: Config, workers: int, log_level: str) -> int:
    def ready(supervisor: Supervisor) -> None:
        print(f"wardgate: {workers} worker processes", flush=True)
        _print_ready(config, supervisor)

    supervisor = Supervisor(config, workers, log_level=log_level, on_ready=ready)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stop)  # forwarded: the first drains, a second cuts
    loop.add_signal_handler(signal.SIGHUP, supervisor.reload_tls)
    code = await supervisor.run()
    if code == 0:
        print("wardgate: stopped; log synced and indexed", file=sys.stderr, flush=True)
    return code


async def _serve_async(config: Config) -> int:
    def ready(gw: Gateway) -> None:
        _print_ready(config, gw)

    gateway = Gateway(config, on_ready=ready, environ=os.environ)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The first signal drains (up to shutdown_grace_s); a second one cuts what is left.
        loop.add_signal_handler(sig, gateway.stop)
    # SIGHUP re-reads TLS certificates and keys; established connections keep theirs.
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_tls)
    await gateway.run()
    print("wardgate: stopped; log synced and indexed", file=sys.stderr, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardgate",
        description="A recording gateway for LLM traffic: every exchange proxied, recorded, searchable.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    mock_llm.add_command(sub)
    inspect.add_commands(sub)
    keys.add_command(sub)
    indexer.add_command(sub)
    worker.add_command(sub)
    retention.add_commands(sub)
    identity.add_commands(sub)
    approvals_cli.add_commands(sub)
    bench_cli.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"wardgate: config error: {exc}", file=sys.stderr)
        return 2
    except DataDirBusy as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"wardgate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
