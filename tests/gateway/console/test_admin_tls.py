"""The admin listener over TLS (``admin.tls_cert``/``tls_key``), certificates from a trustme CA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import msgspec
import pytest
import trustme

from gateway.config import AdminConfig
from gateway.mock_llm import MockLlm
from gateway.server import running
from tests.gateway.conftest import make_config
from tests.gateway.console.conftest import AUDITOR_KEY, AUTH, bearer
from tests.gateway.test_tls import trusting, write_cert


@pytest.mark.asyncio(loop_scope="module")
async def test_the_console_over_tls(tmp_path: Path, mock_llm: MockLlm) -> None:
    ca = trustme.CA()
    cert_file, key_file = write_cert(ca.issue_cert("127.0.0.1"), tmp_path / "tls", "admin")
    admin = AdminConfig(listen="127.0.0.1:0", tls_cert=str(cert_file), tls_key=str(key_file))
    config = msgspec.structs.replace(make_config(tmp_path / "data", mock_llm.port), admin=admin, auth=AUTH)
    async with asyncio.timeout(60), running(config) as gw:
        assert gw.admin_address is not None
        base = f"https://127.0.0.1:{gw.admin_address[1]}"
        async with httpx.AsyncClient(verify=trusting(ca), timeout=10) as client:
            health = await client.get(f"{base}/healthz")
            me = await client.get(f"{base}/api/me", headers=bearer(AUDITOR_KEY))
        async with httpx.AsyncClient(timeout=10) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"{base}/healthz")
    assert health.json() == {"status": "ok"}
    assert me.json()["roles"] == ["auditor", "metrics"]
