"""TLS on both sides over real sockets, certificates from a trustme CA: termination, mTLS, https upstreams,
certificate reload (in process and by SIGHUP to a real gateway process)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import ssl
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from gateway.config import AdminConfig, Config, ConfigError, ListenerConfig, StorageConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running
from gateway.tls import ServerTls, TlsSession, certificate_fingerprint, session_of
from parsers.events import ExchangeStarted, GatewayError
from storage.reader import iter_frames
from tests.gateway.processes import free_port, record_of, wardgate

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-test-tls-4q8Vx0LmZ2"
GET_MODELS = b"GET /v1/models HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


# --- certificates and clients -----------------------------------------------------------------------


def write_cert(cert: Any, directory: Path, stem: str) -> tuple[Path, Path]:
    """A trustme leaf certificate as the PEM chain file and key file a gateway loads."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def write_ca(ca: Any, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


def trusting(ca: Any, client_cert: Any = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client_cert is not None:
        client_cert.configure_cert(ctx)
    return ctx


def tls_config(data_dir: Path, upstream: str, **listener: Any) -> Config:
    return Config(
        listeners=[ListenerConfig(listen="127.0.0.1:0", upstream=upstream, **listener)],
        storage=StorageConfig(data_dir=str(data_dir), durability="strict", group_commit_ms=5),
        admin=AdminConfig(listen=""),
    )


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    return write_cert(ca.issue_cert("127.0.0.1", "localhost"), tmp_path / "tls", "gateway")


@pytest.fixture
async def mock() -> AsyncIterator[MockLlm]:
    async with MockLlm(MockLlmConfig(tokens=12)) as server:
        yield server


async def connect(port: int, ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(5):
        return await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")


def h2_fingerprint(response: httpx.Response) -> str:
    """The certificate the connection that carried ``response`` was made with."""
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    return hashlib.sha256(ssl_object.getpeercert(binary_form=True)).hexdigest()


def peer_fingerprint(writer: asyncio.StreamWriter) -> str:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> tuple[int, bytes]:
    """One request on a kept-alive connection; returns the status and the (Content-Length) body."""
    writer.write(data)
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {
            name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }
        body = await reader.readexactly(int(fields["content-length"]))
    return int(lines[0].split(" ")[1]), body


async def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether the gateway refuses this client: in the handshake, or (TLS 1.3, client certificates are
    checked after the client's Finished) with an alert instead of an answer."""
    try:
        reader, writer = await connect(port, ctx)
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        writer.write(GET_MODELS)
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        writer.transport.abort()
    return answer == b""


def started_events(data_dir: Path) -> list[ExchangeStarted]:
    return [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, ExchangeStarted)]


# --- termination ---------------------------------------------------------------------------------------


async def test_openai_sdk_over_tls_recorded_and_replayed_byte_exact(
    ca: trustme.CA, server_files: tuple[Path, Path], mock: MockLlm, tmp_path: Path
) -> None:
    cert_file, key_file = server_files
    data_dir = tmp_path / "data"
    config = tls_config(
        data_dir, f"http://127.0.0.1:{mock.port}", tls_cert=str(cert_file), tls_key=str(key_file)
    )
    async with (
        asyncio.timeout(60),
        running(config) as gw,
        # The SDK's own httpx client type (openai 3 ships httpx2), given our CA as its trust store.
        openai.DefaultAsyncHttpxClient(verify=trusting(ca), timeout=10) as http,
        openai.AsyncOpenAI(
            base_url=f"https://localhost:{gw.port}/v1", api_key=SECRET, max_retries=0, http_client=http
        ) as llm,
    ):
        raw = await llm.chat.completions.with_raw_response.create(
            model="mock-gpt", messages=[{"role": "user", "content": "a fact about the okapi"}]
        )
        completion = raw.parse()
        exchange_id = raw.headers["x-wardgate-exchange"]
        body = raw.http_response.content
        stream = await llm.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "stream over tls"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert completion.choices[0].message.content
    assert text
    forwarded = {name.lower(): value for name, value in mock.last_request_headers}
    assert forwarded[b"x-forwarded-proto"] == b"https"
    assert b";proto=https" in forwarded[b"forwarded"]
    started = started_events(data_dir)
    assert len(started) == 2
    for event in started:
        assert (event.protocol, event.alpn, event.tls_peer_subject) == ("http/1.1", "http/1.1", "")
        assert event.tls_version in ("TLSv1.2", "TLSv1.3")
        assert event.tls_cipher
    record = await record_of(data_dir, exchange_id)
    assert (record.tls_version, record.alpn, record.status) == (started[0].tls_version, "http/1.1", 200)
    assert "okapi" in record.prompt_text
    replay = wardgate("replay", exchange_id, "--raw", "--data-dir", str(data_dir))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == body


async def test_plaintext_listener_records_no_tls(mock: MockLlm, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        asyncio.timeout(60),
        running(tls_config(data_dir, f"http://127.0.0.1:{mock.port}")) as gw,
        httpx.AsyncClient(timeout=10) as http,
    ):
        assert (await http.get(f"http://127.0.0.1:{gw.port}/v1/models")).status_code == 200
    [event] = started_events(data_dir)
    assert (event.tls_version, event.tls_cipher, event.alpn) == ("", "", "")
    assert dict(mock.last_request_headers)[b"X-Forwarded-Proto"] == b"http"


def legacy_client(ca: trustme.CA, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = trusting(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = maximum
    return ctx


async def test_tls_1_1_refused_1_2_served_and_alpn_prefers_h2(
    ca: trustme.CA, server_files: tuple[Path, Path], mock: MockLlm, tmp_path: Path
) -> None:
    cert_file, key_file = server_files
    config = tls_config(
        tmp_path / "data", f"http://127.0.0.1:{mock.port}", tls_cert=str(cert_file), tls_key=str(key_file)
    )
    async with asyncio.timeout(60), running(config) as gw:
        assert await refused(gw.port, legacy_client(ca, ssl.TLSVersion.TLSv1_1))
        # The same client allowed TLS 1.2 gets in: the refusal was the gateway's minimum version.
        reader, writer = await connect(gw.port, legacy_client(ca, ssl.TLSVersion.TLSv1_2))
        try:
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
            assert (await request(reader, writer, GET_MODELS))[0] == 200
        finally:
            writer.transport.abort()
        # ALPN: h2 is preferred when offered (tests/gateway/test_h2.py speaks it); http/1.1 otherwise.
        for offer, selected in ((["h2", "http/1.1"], "h2"), (["h2"], "h2"), (["http/1.1"], "http/1.1")):
            ctx = trusting(ca)
            ctx.set_alpn_protocols(offer)
            reader, writer = await connect(gw.port, ctx)
            try:
                assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == selected
                if selected == "http/1.1":
                    assert (await request(reader, writer, GET_MODELS))[0] == 200
            finally:
                writer.transport.abort()


async def test_mtls_requires_a_verified_client_certificate_and_records_its_subject(
    ca: trustme.CA, server_files: tuple[Path, Path], mock: MockLlm, tmp_path: Path
) -> None:
    client_ca, stranger_ca = trustme.CA(), trustme.CA()
    alice = client_ca.issue_cert(
        "alice@example.com", common_name="alice", organization_name="Example", organization_unit_name="agents"
    )
    mallory = stranger_ca.issue_cert("mallory@example.com", common_name="mallory")
    cert_file, key_file = server_files
    data_dir = tmp_path / "data"
    config = tls_config(
        data_dir,
        f"http://127.0.0.1:{mock.port}",
        tls_cert=str(cert_file),
        tls_key=str(key_file),
        tls_client_ca=str(write_ca(client_ca, tmp_path / "client-ca.pem")),
    )
    async with asyncio.timeout(60), running(config) as gw:
        assert await refused(gw.port, trusting(ca))
        assert await refused(gw.port, trusting(ca, mallory))
        assert mock.requests == 0
        reader, writer = await connect(gw.port, trusting(ca, alice))
        try:
            status, _ = await request(reader, writer, GET_MODELS)
        finally:
            writer.transport.abort()
    assert status == 200
    assert mock.requests == 1
    [event] = started_events(data_dir)  # refused handshakes never became exchanges
    assert event.tls_peer_subject == "CN=alice,OU=agents,O=Example"


async def test_session_of_describes_the_verified_client_certificate(
    ca: trustme.CA, server_files: tuple[Path, Path], tmp_path: Path
) -> None:
    alice = ca.issue_cert(
        "alice.agents.example",
        "alice@example.com",
        "10.1.2.3",
        common_name="alice, the agent",
        organization_name="Example",
        organization_unit_name="agents",
    )
    cert_file, key_file = server_files
    listener = ListenerConfig(
        tls_cert=str(cert_file), tls_key=str(key_file), tls_client_ca=str(write_ca(ca, tmp_path / "ca.pem"))
    )
    tls = ServerTls(listener, field="listeners[0]")
    seen: list[TlsSession | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(session_of(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls.context)
    async with server:
        reader, writer = await connect(server.sockets[0].getsockname()[1], trusting(ca, alice))
        async with asyncio.timeout(5):
            assert await reader.read() == b"ok"
        writer.transport.abort()
    [session] = seen
    assert session is not None
    assert session.peer is not None
    peer = session.peer
    # cryptography (trustme's own dependency) as the oracle for RFC 4514 strings.
    leaf = x509.load_pem_x509_certificate(alice.cert_chain_pems[0].bytes())
    assert peer.subject == leaf.subject.rfc4514_string() == r"CN=alice\, the agent,OU=agents,O=Example"
    assert peer.issuer == leaf.issuer.rfc4514_string()
    assert peer.sans == ("DNS:alice.agents.example", "email:alice@example.com", "IP:10.1.2.3")
    assert peer.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()
    assert int(peer.serial, 16) == leaf.serial_number
    assert session.alpn == ""  # this client offered no ALPN
    assert session.version in ("TLSv1.2", "TLSv1.3")


async def test_reload_swaps_the_certificate_for_new_handshakes_only(
    ca: trustme.CA, server_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert_file, key_file = server_files
    tls = ServerTls(ListenerConfig(tls_cert=str(cert_file), tls_key=str(key_file)), field="listeners[0]")
    first = certificate_fingerprint(cert_file)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        old_reader, old_writer = await connect(port, trusting(ca))
        assert peer_fingerprint(old_writer) == first
        write_cert(ca.issue_cert("127.0.0.1", "localhost"), cert_file.parent, "gateway")
        second = tls.reload()
        assert second == certificate_fingerprint(cert_file) != first
        old_writer.write(b"still here\n")
        async with asyncio.timeout(5):
            assert await old_reader.readline() == b"still here\n"
        _, new_writer = await connect(port, trusting(ca))
        assert peer_fingerprint(new_writer) == second
        new_writer.transport.abort()
        key_file.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        with pytest.raises(ConfigError, match=r"listeners\[0\]\.tls_cert/tls_key: cannot load"):
            tls.reload()
        _, kept_writer = await connect(port, trusting(ca))
        assert peer_fingerprint(kept_writer) == second
        kept_writer.transport.abort()
        old_writer.transport.abort()
    assert tls.reloads == 1


async def test_unloadable_certificate_fails_startup_naming_the_field(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    missing = str(tmp_path / "missing.pem")
    config = tls_config(data_dir, "http://127.0.0.1:9", tls_cert=missing, tls_key=missing)
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.tls_cert: cannot read"):
        await Gateway(config).run()
    assert not data_dir.exists()  # nothing was touched before the TLS material loaded
    result = await asyncio.to_thread(
        wardgate, "serve", "--tls-cert", missing, "--tls-key", missing, "--data-dir", str(data_dir)
    )
    assert result.returncode == 2
    assert result.stderr.startswith(b"wardgate: config error: listeners[0].tls_cert")
    assert b"Traceback" not in result.stderr


# --- origination ------------------------------------------------------------------------------------------


@pytest.fixture
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_mock(upstream_ca: trustme.CA) -> AsyncIterator[tuple[MockLlm, list[str | None]]]:
    """The mock model server behind TLS (a certificate from ``upstream_ca``), and the SNI names it saw."""
    names: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    upstream_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    ctx.set_alpn_protocols(["http/1.1"])

    def sni(obj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = sni
    server = MockLlm(MockLlmConfig(tokens=6))
    await server.start("127.0.0.1", 0, ssl=ctx)
    try:
        yield server, names
    finally:
        await server.close()


async def test_https_upstream_verified_with_sni_and_pooled(
    upstream_ca: trustme.CA, tls_mock: tuple[MockLlm, list[str | None]], tmp_path: Path
) -> None:
    mock, sni_names = tls_mock
    assert mock.base_url.startswith("https://")
    data_dir = tmp_path / "data"
    config = tls_config(
        data_dir,
        f"https://localhost:{mock.port}/",
        upstream_ca=str(write_ca(upstream_ca, tmp_path / "upstream-ca.pem")),
    )
    async with asyncio.timeout(60), running(config) as gw, httpx.AsyncClient(timeout=10) as http:
        for _ in range(3):
            response = await http.post(
                f"http://127.0.0.1:{gw.port}/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
            assert response.text.endswith("data: [DONE]\n\n")
        pool = gw.contexts[0].pool
        assert (pool.connects, pool.reuses) == (1, 2)  # kept alive over TLS
    assert sni_names == ["localhost"]
    assert dict(mock.last_request_headers)[b"Host"] == f"localhost:{mock.port}".encode()
    assert mock.requests == 3


async def test_https_upstream_with_an_untrusted_certificate_is_502(
    tls_mock: tuple[MockLlm, list[str | None]], tmp_path: Path
) -> None:
    mock, _ = tls_mock
    data_dir = tmp_path / "data"
    wrong_ca = write_ca(trustme.CA(), tmp_path / "wrong-ca.pem")
    config = tls_config(data_dir, f"https://127.0.0.1:{mock.port}", upstream_ca=str(wrong_ca))
    async with asyncio.timeout(60), running(config) as gw, httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{gw.port}/v1/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_tls_error"
    assert mock.requests == 0
    errors = [s.frame.event for s in iter_frames(data_dir) if isinstance(s.frame.event, GatewayError)]
    assert [e.kind for e in errors] == ["upstream_tls_error"]
    assert "certificate" in errors[0].message


async def test_upstream_insecure_skips_verification_and_says_so(
    tls_mock: tuple[MockLlm, list[str | None]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mock, _ = tls_mock
    config = tls_config(tmp_path / "data", f"https://127.0.0.1:{mock.port}", upstream_insecure=True)
    with caplog.at_level(logging.WARNING, logger="wardgate"):
        async with asyncio.timeout(60), running(config) as gw, httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{gw.port}/v1/models")
    assert response.status_code == 200
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "INSECURE" in r.getMessage()]
    assert len(warning) == 1
    assert f"https://127.0.0.1:{mock.port}" in warning[0].getMessage()


# --- SIGHUP to a real gateway process ----------------------------------------------------------------------


async def wait_line(stream: asyncio.StreamReader | None, marker: bytes, seen: list[bytes]) -> bytes:
    """The next line holding ``marker`` (within 20 s); every line read is kept in ``seen``."""
    assert stream is not None
    async with asyncio.timeout(20):
        while line := await stream.readline():
            seen.append(line)
            if marker in line:
                return line
    raise AssertionError(f"{marker!r} never came; got {b''.join(seen)!r}")


async def test_sighup_reloads_the_certificate_keeping_open_connections(
    ca: trustme.CA, server_files: tuple[Path, Path], mock: MockLlm, tmp_path: Path
) -> None:
    cert_file, key_file = server_files
    first = certificate_fingerprint(cert_file)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{port}"),
        *("--upstream", f"http://127.0.0.1:{mock.port}", "--data-dir", str(tmp_path / "data")),
        *("--admin-listen", "", "--tls-cert", str(cert_file), "--tls-key", str(key_file)),
        *("--workers", "1"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    logged: list[bytes] = []
    try:
        await wait_line(proc.stdout, b"listening on https://", [])
        kept_reader, kept_writer = await connect(port, trusting(ca))
        assert peer_fingerprint(kept_writer) == first
        assert (await request(kept_reader, kept_writer, GET_MODELS))[0] == 200
        # An HTTP/2 connection (ALPN h2) is kept across the reload too.
        h2_client = httpx.AsyncClient(
            base_url=f"https://localhost:{port}", http2=True, verify=trusting(ca), timeout=10
        )
        answer = await h2_client.get("/v1/models")
        assert (answer.status_code, answer.http_version) == (200, "HTTP/2")
        assert h2_fingerprint(answer) == first

        write_cert(ca.issue_cert("127.0.0.1", "localhost"), cert_file.parent, "gateway")
        second = certificate_fingerprint(cert_file)
        proc.send_signal(signal.SIGHUP)
        assert second.encode() in await wait_line(proc.stderr, b"TLS certificate reloaded", logged)
        # The connection made before the reload is kept alive and still served.
        status, body = await request(kept_reader, kept_writer, GET_MODELS)
        assert status == 200
        assert json.loads(body)["data"]
        _, fresh_writer = await connect(port, trusting(ca))
        assert peer_fingerprint(fresh_writer) == second
        fresh_writer.transport.abort()
        answer = await h2_client.get("/v1/models")  # the same HTTP/2 connection, its old certificate
        assert (answer.status_code, h2_fingerprint(answer)) == (200, first)
        await h2_client.aclose()

        cert_file.write_text("this is not a certificate\n")
        proc.send_signal(signal.SIGHUP)
        error = await wait_line(proc.stderr, b"TLS reload failed", logged)
        assert b"ERROR" in error
        assert b"previous certificate" in error
        reader, writer = await connect(port, trusting(ca))
        assert peer_fingerprint(writer) == second
        assert (await request(reader, writer, GET_MODELS))[0] == 200
        writer.transport.abort()
        kept_writer.transport.abort()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, b"".join(logged)


async def test_sighup_reaches_every_worker(
    ca: trustme.CA, server_files: tuple[Path, Path], mock: MockLlm, tmp_path: Path
) -> None:
    cert_file, key_file = server_files
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway.cli", "serve", "--listen", f"127.0.0.1:{port}"),
        *("--upstream", f"http://127.0.0.1:{mock.port}", "--data-dir", str(tmp_path / "data")),
        *("--admin-listen", "", "--tls-cert", str(cert_file), "--tls-key", str(key_file)),
        *("--workers", "2"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    logged: list[bytes] = []
    try:
        await wait_line(proc.stdout, b"listening on https://", [])
        write_cert(ca.issue_cert("127.0.0.1", "localhost"), cert_file.parent, "gateway")
        second = certificate_fingerprint(cert_file)
        proc.send_signal(signal.SIGHUP)
        reloads = [await wait_line(proc.stderr, b"TLS certificate reloaded", logged) for _ in range(2)]
        assert sorted(line.split(b": ", 1)[0].rsplit(b" ", 1)[1] for line in reloads) == [
            b"wardgate[w0]",
            b"wardgate[w1]",
        ]
        assert all(second.encode() in line for line in reloads)
        for _ in range(6):  # whichever worker the kernel picks serves the new certificate
            _, writer = await connect(port, trusting(ca))
            assert peer_fingerprint(writer) == second
            writer.transport.abort()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, b"".join(logged)
