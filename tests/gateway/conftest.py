"""Real components for end-to-end tests: the mock model server, a gateway on a real socket, real files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import msgspec
import pytest

from gateway.config import AdminConfig, Config, LimitsConfig, ListenerConfig, StorageConfig
from gateway.masking import MaskingConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import Gateway, running

GatewayFactory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
async def mock() -> AsyncIterator[MockLlm]:
    async with MockLlm(MockLlmConfig(tokens=12)) as server:
        yield server


def make_config(data_dir: Path, upstream_port: int, **limits: float) -> Config:
    return Config(
        listeners=[ListenerConfig(listen="127.0.0.1:0", upstream=f"http://127.0.0.1:{upstream_port}")],
        storage=StorageConfig(data_dir=str(data_dir), durability="strict", group_commit_ms=5),
        limits=msgspec.structs.replace(LimitsConfig(), **limits),
    )


@pytest.fixture
def start_gateway(tmp_path: Path, mock: MockLlm) -> GatewayFactory:
    """``async with start_gateway(**limits) as gw`` runs a gateway in front of the mock."""

    @asynccontextmanager
    async def start(
        upstream_port: int | None = None,
        durability: str = "strict",
        admin_listen: str = "",
        data_dir: Path | None = None,
        public_metrics: bool = False,
        masking: MaskingConfig | None = None,
        **limits: float,
    ) -> AsyncIterator[Gateway]:
        config = make_config(data_dir or tmp_path / "data", upstream_port or mock.port, **limits)
        config = msgspec.structs.replace(
            config,
            storage=msgspec.structs.replace(config.storage, durability=durability),
            admin=AdminConfig(listen=admin_listen, public_metrics=public_metrics),
            masking=masking or config.masking,
        )
        async with asyncio.timeout(60), running(config) as gw:
            yield gw

    return start


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
