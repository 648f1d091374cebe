"""The dev IdP end to end over real sockets: start it, mint with ``wardgate token``, verify via discovery."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.identity.commands import parse_ttl
from gateway.identity.dev_idp import BANNER, KEY_FILE, DevIdp, MintError, SigningKey
from gateway.identity.http_client import request
from gateway.identity.jwks import JwksCache, discovery_loader
from gateway.identity.jwt_verify import TokenRejected, TokenVerifier, VerifierConfig
from parsers.events import Identity, RequestHead
from tests.gateway.processes import ROOT

COMMANDS = [sys.executable, "-m", "gateway.identity"]


async def run(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *COMMANDS, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.fixture
async def idp(tmp_path: Path) -> AsyncIterator[str]:
    """A dev-idp process on 127.0.0.1:0; yields its issuer URL."""
    proc = await asyncio.create_subprocess_exec(
        *COMMANDS,
        "dev-idp",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(tmp_path / "idp"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("wardgate dev-idp: issuer http://127.0.0.1:"), line
        async with asyncio.timeout(5):
            banner = await proc.stderr.readline()
        assert b"NOT FOR PRODUCTION" in banner
        yield line.split()[3]
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()


async def test_token_minted_by_the_dev_idp_verifies_through_discovery(idp: str, tmp_path: Path) -> None:
    code, out, err = await run(
        "token", "--idp", idp, "--sub", "alice", "--groups", "dev,ops", "--email", "a@example.test"
    )
    assert code == 0, err
    token = out.decode().strip()
    assert out.decode() == token + "\n"  # just the token

    verifier = TokenVerifier(
        VerifierConfig(issuer=idp, audiences=("wardgate",)), JwksCache(discovery_loader(idp))
    )
    identity = await verifier.verify(token)
    assert identity == Identity(
        subject="alice",
        method="oidc",
        email="a@example.test",
        groups=("dev", "ops"),
        issuer=idp,
        token_id=identity.token_id,
    )
    assert identity.token_id

    code, out, _ = await run("token", "--idp", idp, "--sub", "bob", "--aud", "other", "--ttl", "5m")
    assert code == 0
    with pytest.raises(TokenRejected, match="wrong audience"):
        await verifier.verify(out.decode().strip())

    key_file = tmp_path / "idp" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


async def test_mint_validates_its_request_over_http(idp: str) -> None:
    bad = await request("POST", f"{idp}/mint", body=json.dumps({"sub": "", "groups": []}).encode())
    assert bad.status == 400
    assert b"sub" in bad.body
    assert (await request("GET", f"{idp}/mint")).status == 405
    assert (await request("GET", f"{idp}/nothing")).status == 404
    discovery = json.loads((await request("GET", f"{idp}/.well-known/openid-configuration")).body)
    assert discovery["issuer"] == idp
    assert discovery["jwks_uri"] == f"{idp}/jwks.json"


async def test_token_reports_an_unreachable_idp() -> None:
    code, out, err = await run("token", "--idp", "http://127.0.0.1:1", "--sub", "alice")
    assert code == 1
    assert out == b""
    assert b"wardgate: token:" in err


def test_the_signing_key_persists_and_mint_answers_loopback_only(tmp_path: Path) -> None:
    key = SigningKey(tmp_path)
    assert SigningKey(tmp_path).kid == key.kid
    idp = DevIdp(key, "http://127.0.0.1:9400")
    head = RequestHead(method=b"POST", target=b"/mint", headers=[])
    body = json.dumps({"sub": "alice"}).encode()
    assert idp.answer(head, body, loopback=False)[0] == 403
    assert idp.answer(head, body, loopback=True)[0] == 200
    assert "NOT FOR PRODUCTION" in BANNER


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b"[]",
        b'{"sub": 1}',
        b'{"sub": "a", "groups": "dev"}',
        b'{"sub": "a", "ttl_s": 0}',
        b'{"sub": "a", "ttl_s": true}',
        b'{"sub": "a", "aud": ""}',
        b'{"sub": "a", "email": 5}',
    ],
)
def test_mint_refuses_bad_requests(tmp_path: Path, body: bytes) -> None:
    with pytest.raises(MintError):
        DevIdp(SigningKey(tmp_path), "http://127.0.0.1:9400").mint(body)


def test_parse_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "30m", "1h", "2d")] == [90, 90, 1800, 3600, 172800]
    with pytest.raises(ValueError, match="duration"):
        parse_ttl("1 week")
