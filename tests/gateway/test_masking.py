"""Masking end to end: fixture secrets sent through the gateway never reach any file under the data dir."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest

from gateway.config import AdminConfig, Config, ConfigError, validate
from gateway.masking import CustomRuleConfig, MaskingConfig
from gateway.mock_llm import MockLlm, MockLlmConfig
from gateway.server import running
from parsers.events import BodyChunk, Direction, MaskingApplied
from storage.reader import iter_frames
from tests.gateway.conftest import make_config
from tests.gateway.processes import record_of
from tests.parsers.masking import fixtures as f

SECRETS = [
    "MIIEowIBAAKCAQEAwFake",  # the body of the PEM block
    f.AWS_KEY_ID,
    f.AWS_SECRET,
    f.GCP_KEY_ID,
    f.OPENAI_KEY,
    f.GITHUB_TOKEN,
    f.GITHUB_PAT,
    f.SLACK_TOKEN,
    f.JWT,
    f.DB_PASSWORD,
    f.EMAIL,
    f.CARD,
    f.IBAN,
    "EMP123456",  # the custom rule's
]
TEXT = (
    f"Here is everything: {f.PEM}\naws_access_key_id={f.AWS_KEY_ID} aws_secret_access_key={f.AWS_SECRET} "
    f'{{"type": "service_account", "private_key_id": "{f.GCP_KEY_ID}"}} openai {f.OPENAI_KEY} '
    f"github {f.GITHUB_TOKEN} {f.GITHUB_PAT} slack {f.SLACK_TOKEN} jwt {f.JWT} "
    f"db postgres://app:{f.DB_PASSWORD}@db.internal/prod mail {f.EMAIL} card {f.CARD} iban {f.IBAN} "
    "employee EMP123456."
)
MASKING = MaskingConfig(rules=[CustomRuleConfig(name="employee_id", pattern="EMP[0-9]{6}")])


def _stream_body(text: str) -> bytes:
    base = {"id": "chatcmpl-m", "object": "chat.completion.chunk", "created": 1, "model": "mock-gpt"}
    events: list[dict[str, Any]] = []
    for i in range(0, len(text), 3):  # three characters per event: every secret spans many events
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": text[i : i + 3]}, "finish_reason": None}]}
        )
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": ""}}
    events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
    arguments = msgspec.json.encode({"command": f"export OPENAI_API_KEY={f.OPENAI_KEY}"}).decode()
    for i in range(0, len(arguments), 4):
        piece = {"index": 0, "function": {"arguments": arguments[i : i + 4]}}
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]}
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _json_body(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return msgspec.json.encode(
        {"id": "chatcmpl-j", "object": "chat.completion", "created": 1, "model": "mock-gpt",
         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    )  # fmt: skip


def _capture(directory: Path, name: str, headers: list[list[str]], body: bytes) -> None:
    response = {
        "status": 200,
        "reason": "OK",
        "headers": headers,
        "body_b64": base64.b64encode(body).decode(),
    }
    (directory / f"{name}.json").write_bytes(msgspec.json.encode({"response": response}))


def leaks(data_dir: Path, secrets: list[str]) -> list[str]:
    """Which secrets appear, raw or JSON-escaped, in which file under the data dir (segments, SQLite, WAL)."""
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("index.sqlite3") for p in files)
    found = []
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            if secret.encode() in data or msgspec.json.encode(secret)[1:-1] in data:
                found.append(f"{secret[:6]}... in {path.name}")
    return found


@pytest.fixture
async def replaying(tmp_path: Path) -> AsyncIterator[MockLlm]:
    captures = tmp_path / "captures"
    captures.mkdir()
    _capture(captures, "stream", [["Content-Type", "text/event-stream"]], _stream_body(TEXT))
    _capture(captures, "json", [["Content-Type", "application/json"]], _json_body(TEXT))
    gzipped = gzip.compress(_json_body(TEXT))
    _capture(captures, "gzip", [["Content-Type", "application/json"], ["Content-Encoding", "gzip"]], gzipped)
    async with MockLlm(MockLlmConfig(replay_dir=captures, token_delay_ms=1)) as server:
        yield server


async def test_no_raw_secret_reaches_any_file(replaying: MockLlm, data_dir: Path) -> None:
    config = msgspec.structs.replace(
        make_config(data_dir, replaying.port), masking=MASKING, admin=AdminConfig(listen="")
    )
    exchanges: list[str] = []
    async with asyncio.timeout(60), running(config) as gw:
        llm = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="sk-test", max_retries=0)
        async with llm:
            raw = await llm.chat.completions.with_raw_response.create(
                model="mock-gpt",
                messages=[{"role": "user", "content": TEXT}],
                stream=True,
                extra_headers={"X-Mock-Capture": "stream"},
            )
            exchanges.append(raw.headers["x-wardgate-exchange"])
            content, arguments = "", ""
            async for chunk in raw.parse():
                delta = chunk.choices[0].delta if chunk.choices else None
                content += (delta.content or "") if delta else ""
                for call in (delta.tool_calls or []) if delta else []:
                    arguments += (call.function.arguments or "") if call.function else ""
            # The record scope masks only what is written down: the client got the model's bytes.
            assert content == TEXT
            assert f.OPENAI_KEY in arguments
            for capture in ("json", "gzip"):
                raw_json = await llm.chat.completions.with_raw_response.create(
                    model="mock-gpt",
                    messages=[{"role": "user", "content": TEXT}],
                    extra_headers={"X-Mock-Capture": capture},
                )
                exchanges.append(raw_json.headers["x-wardgate-exchange"])
                assert raw_json.parse().choices[0].message.content == TEXT
    assert leaks(data_dir, SECRETS) == []

    applied = [s.frame for s in iter_frames(data_dir) if isinstance(s.frame.event, MaskingApplied)]
    rules = {frame.event.rule for frame in applied if isinstance(frame.event, MaskingApplied)}
    assert rules >= {"private_key", "aws_access_key", "email", "card_number", "iban", "employee_id", "jwt"}
    assert {frame.direction for frame in applied} >= {Direction.FROM_CLIENT, Direction.FROM_UPSTREAM}
    assert any(
        isinstance(frame.event, MaskingApplied)
        and frame.event.field == "choices[0].delta.tool_calls[0].function.arguments"
        for frame in applied
    )
    for exchange_id in exchanges:
        record = await record_of(data_dir, exchange_id)
        assert "[MASKED:aws_access_key]" in record.response_text
        assert "[MASKED:email]" in record.prompt_text
    streamed = await record_of(data_dir, exchanges[0])
    assert (
        streamed.tool_calls[0].arguments
        == msgspec.json.encode({"command": "export OPENAI_API_KEY=[MASKED:openai_api_key]"}).decode()
    )
    # Every upstream read is still a recorded chunk with its own time, even when its bytes were held.
    chunks = [
        s.frame
        for s in iter_frames(data_dir)
        if s.frame.exchange_id == exchanges[0]
        and s.frame.direction == Direction.FROM_UPSTREAM
        and isinstance(s.frame.event, BodyChunk)
    ]
    assert len(chunks) > 10
    assert [c.ts_ns for c in chunks] == sorted(c.ts_ns for c in chunks)


@pytest.mark.parametrize(
    ("masking", "field"),
    [
        (MaskingConfig(disabled=["emails"]), "unknown detector 'emails'"),
        (MaskingConfig(scopes={"email": ["logs"]}), "masking.scopes.email: unknown scope 'logs'"),
        (MaskingConfig(rules=[CustomRuleConfig(name="x", pattern="(")]), r"masking.rules\[0\]: rule 'x'"),
        (MaskingConfig(max_hold_chars=10), "masking.max_hold_chars"),
    ],
)
def test_bad_masking_config_names_the_field(masking: MaskingConfig, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate(Config(masking=masking))


CLIENT_MASKING = MaskingConfig(
    scopes={"email": ["record", "client"], "openai_api_key": ["record", "client"]},
    rules=[CustomRuleConfig(name="employee_id", pattern="EMP[0-9]{6}", scopes=["record", "client"])],
)


async def test_client_scope_masks_what_the_client_gets(replaying: MockLlm, data_dir: Path) -> None:
    config = msgspec.structs.replace(
        make_config(data_dir, replaying.port), masking=CLIENT_MASKING, admin=AdminConfig(listen="")
    )
    async with asyncio.timeout(60), running(config) as gw:
        llm = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="sk-test", max_retries=0)
        async with llm:
            stream = await llm.chat.completions.create(
                model="mock-gpt",
                messages=[{"role": "user", "content": "hello"}],
                stream=True,
                extra_headers={"X-Mock-Capture": "stream"},
            )
            content, arguments = "", ""
            async for chunk in stream:
                delta = chunk.choices[0].delta if chunk.choices else None
                content += (delta.content or "") if delta else ""
                for call in (delta.tool_calls or []) if delta else []:
                    arguments += (call.function.arguments or "") if call.function else ""
            bodies = {"stream": content}
            for capture in ("json", "gzip"):
                raw = await llm.chat.completions.with_raw_response.create(
                    model="mock-gpt",
                    messages=[{"role": "user", "content": "hello"}],
                    extra_headers={"X-Mock-Capture": capture},
                )
                assert int(raw.headers["content-length"]) == len(raw.content)  # recomputed, body valid JSON
                bodies[capture] = raw.parse().choices[0].message.content or ""
    for body in bodies.values():
        # Every secret split over many 3-character events (or whole in JSON) is masked for the client...
        assert f.EMAIL not in body
        assert "[MASKED:email]" in body
        assert f.OPENAI_KEY not in body
        assert "[MASKED:openai_api_key]" in body
        assert "EMP123456" not in body
        assert "[MASKED:employee_id]" in body
        # ...and only the client-scope rules: the others reach the client as the model sent them.
        assert f.IBAN in body
        assert f.AWS_KEY_ID in body
    # The tool call's arguments stay valid JSON with the key masked inside the string.
    assert msgspec.json.decode(arguments) == {"command": "export OPENAI_API_KEY=[MASKED:openai_api_key]"}
    client_scope = [
        s.frame.event
        for s in iter_frames(data_dir)
        if isinstance(s.frame.event, MaskingApplied) and s.frame.event.scope == "client"
    ]
    assert {event.rule for event in client_scope} == {"email", "openai_api_key", "employee_id"}
    assert leaks(data_dir, [f.EMAIL, f.OPENAI_KEY, "EMP123456"]) == []
