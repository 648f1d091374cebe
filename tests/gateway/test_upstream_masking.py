"""The upstream scope end to end: what reaches the model is masked (a real socket server captures the
bytes the gateway forwards), the log keeps what the client sent, record-masked, and says what changed."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import msgspec
import openai

from gateway.config import (
    AdminConfig,
    ApiKeyConfig,
    AuthConfig,
    Config,
    LimitsConfig,
    ListenerConfig,
    PolicyConfig,
    PolicyRule,
    StorageConfig,
    validate,
)
from gateway.identity.apikeys import hash_api_key, new_api_key
from gateway.masking import CustomRuleConfig, MaskingConfig, MaskingOverride
from gateway.server import Gateway, running
from parsers.events import BodyChunk, Direction, GatewayError, MaskingApplied, MessageEnd, RequestHead
from storage.codec import Frame
from storage.reader import iter_frames
from tests.gateway.processes import record_of, wardgate
from tests.gateway.test_masking import leaks
from tests.parsers.masking import fixtures as f

CONTRACTOR_KEY = new_api_key()
SECURITY_KEY = new_api_key()
PROMPT = f"mail {f.EMAIL}, key {f.OPENAI_KEY}, card {f.CARD}, employee EMP123456, db postgres://app:{f.DB_PASSWORD}@db/prod."
SECRETS = [f.EMAIL, f.OPENAI_KEY, f.CARD, "EMP123456"]
MASKING = MaskingConfig(
    scopes={"email": ["record", "upstream"], "openai_api_key": ["record", "upstream"]},
    rules=[CustomRuleConfig(name="employee_id", pattern="EMP[0-9]{6}", scopes=["record"])],
    overrides=[
        MaskingOverride(groups=["contractors"], scopes=["upstream"], enable=["card_number", "employee_id"]),
        MaskingOverride(groups=["security"], scopes=["upstream"], disable=["*"]),
    ],
)
ANSWER = msgspec.json.encode(
    {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
)  # fmt: skip


class Captured(msgspec.Struct):
    head: h11.Request
    body: bytes


class CaptureUpstream:
    """A real upstream on a socket: keeps every request as h11 read it off the wire, answers ``ANSWER``.

    h11 enforces the framing: a Content-Length that does not match the bytes sent fails the test."""

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        head: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    head, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and head is not None:
                    self.requests.append(Captured(head, body))
                    headers = [("content-type", "application/json"), ("content-length", str(len(ANSWER)))]
                    writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
                    writer.write(conn.send(h11.Data(data=ANSWER)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    conn.start_next_cycle()
                else:
                    return
        finally:
            writer.close()

    def length(self, i: int) -> int:
        values = [v for n, v in self.requests[i].head.headers if n == b"content-length"]
        assert len(values) == 1
        return int(values[0])


@asynccontextmanager
async def capturing() -> AsyncIterator[CaptureUpstream]:
    upstream = CaptureUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    async with server:
        yield upstream


def config(data_dir: Path, upstream: str, **listener: Any) -> Config:
    return validate(
        Config(
            listeners=[ListenerConfig(listen="127.0.0.1:0", upstream=upstream, **listener)],
            storage=StorageConfig(data_dir=str(data_dir), durability="batched", group_commit_ms=5),
            limits=LimitsConfig(max_body_bytes=16 * 1024),
            admin=AdminConfig(listen=""),
            auth=AuthConfig(
                api_keys=[
                    ApiKeyConfig(name="carol", hash=hash_api_key(CONTRACTOR_KEY), groups=["contractors"]),
                    ApiKeyConfig(name="sam", hash=hash_api_key(SECURITY_KEY), groups=["security"]),
                ]
            ),
            policy=PolicyConfig(rules=[PolicyRule(name="everyone")]),
            masking=MASKING,
        )
    )


def frames_of(data_dir: Path, exchange_id: str) -> Iterator[Frame]:
    return (s.frame for s in iter_frames(data_dir) if s.frame.exchange_id == exchange_id)


def upstream_applied(data_dir: Path, exchange_id: str) -> list[tuple[str, int, str]]:
    return [
        (frame.event.rule, frame.event.count, frame.event.field)
        for frame in frames_of(data_dir, exchange_id)
        if isinstance(frame.event, MaskingApplied) and frame.event.scope == "upstream"
    ]


def order(data_dir: Path, exchange_id: str) -> list[str]:
    """The request's recorded frames in order: the forwarded head, the client's body chunks, its end."""
    out = []
    for frame in frames_of(data_dir, exchange_id):
        match frame.event:
            case RequestHead() if frame.direction == Direction.TO_UPSTREAM:
                out.append("to_upstream head")
            case BodyChunk() if frame.direction == Direction.FROM_CLIENT:
                out.append("chunk")
            case MessageEnd() if frame.direction == Direction.FROM_CLIENT:
                out.append("end")
    return out


def chat(content: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}]}


async def test_the_model_gets_the_masked_body_per_group(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with capturing() as upstream, running(config(data_dir, f"http://127.0.0.1:{upstream.port}")) as gw:
        exchanges = []
        for key in (CONTRACTOR_KEY, SECURITY_KEY):
            llm = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=key, max_retries=0)
            async with asyncio.timeout(30), llm:
                raw = await llm.chat.completions.with_raw_response.create(
                    model="m", messages=[{"role": "user", "content": PROMPT}]
                )
                assert raw.parse().choices[0].message.content == "ok"
                exchanges.append(raw.headers["x-wardgate-exchange"])

    contractor, security = upstream.requests
    sent = msgspec.json.decode(contractor.body)  # valid JSON, its Content-Length right (h11 read it)
    assert upstream.length(0) == len(contractor.body)
    content = "mail [MASKED:email], key [MASKED:openai_api_key], card [MASKED:card_number], employee "
    # The connection string's password is masked in the record scope only: the model gets it.
    db = f"db postgres://app:{f.DB_PASSWORD}@db/prod."
    assert sent["messages"][0]["content"] == content + f"[MASKED:employee_id], {db}"
    assert sent["model"] == "m"
    # The security group's override turns upstream masking off: the model gets what they sent.
    assert msgspec.json.decode(security.body)["messages"][0]["content"] == PROMPT

    field = "messages[0].content"
    assert upstream_applied(data_dir, exchanges[0]) == [
        ("email", 1, field),
        ("openai_api_key", 1, field),
        ("card_number", 1, field),
        ("employee_id", 1, field),
    ]
    assert upstream_applied(data_dir, exchanges[1]) == []
    # The log: the client's body record-masked, the forwarded head with the length the model got, and the
    # upstream frames right after it.
    frames = list(frames_of(data_dir, exchanges[0]))
    (at,) = [
        i
        for i, fr in enumerate(frames)
        if fr.direction == Direction.TO_UPSTREAM and isinstance(fr.event, RequestHead)
    ]
    forwarded = frames[at].event
    assert isinstance(forwarded, RequestHead)
    assert (b"Content-Length", str(len(contractor.body)).encode()) in forwarded.headers
    assert all(isinstance(fr.event, MaskingApplied) for fr in frames[at + 1 : at + 5])
    # Held whole for the contractor (the head forwarded after the body ended); relayed as it came for
    # security, whose requests have no upstream rules.
    assert order(data_dir, exchanges[0]).index("to_upstream head") > order(data_dir, exchanges[0]).index(
        "end"
    )
    assert order(data_dir, exchanges[1]).index("to_upstream head") < order(data_dir, exchanges[1]).index(
        "end"
    )
    record = await record_of(data_dir, exchanges[0])
    assert "mail [MASKED:email]" in record.prompt_text
    assert leaks(data_dir, [*SECRETS, f.DB_PASSWORD]) == []
    replayed = wardgate("replay", exchanges[0], "--data-dir", str(data_dir), "--speed", "0").stdout.decode()
    assert (
        "masked before the model: email x1 (messages[0].content), openai_api_key x1 (messages[0].content), "
        "card_number x1 (messages[0].content), employee_id x1 (messages[0].content)\n"
    ) in replayed


async def test_http2_clients_are_masked_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with capturing() as upstream, running(config(data_dir, f"http://127.0.0.1:{upstream.port}")) as gw:
        headers = {"authorization": f"Bearer {CONTRACTOR_KEY}"}
        url = f"http://127.0.0.1:{gw.port}"
        async with asyncio.timeout(30), httpx.AsyncClient(base_url=url, http1=False, http2=True) as client:
            response = await client.post("/v1/chat/completions", json=chat(PROMPT), headers=headers)
            assert response.http_version == "HTTP/2"
            assert response.json()["choices"][0]["message"]["content"] == "ok"
            # A body of unknown length (chunked towards the model) gets a Content-Length once masked.
            pieces = [msgspec.json.encode(chat(PROMPT))[i : i + 7] for i in range(0, 400, 7)]

            async def stream() -> AsyncIterator[bytes]:
                for piece in pieces:
                    yield piece

            body = b"".join(pieces)
            response = await client.post("/v1/chat/completions", content=stream(), headers=headers)
            assert response.status_code == 200
    for captured in upstream.requests:
        assert f.EMAIL.encode() not in captured.body
    assert upstream.length(0) == len(upstream.requests[0].body)
    assert upstream.length(1) == len(upstream.requests[1].body)
    assert upstream.requests[1].body == body.replace(f.EMAIL.encode(), b"[MASKED:email]").replace(
        f.OPENAI_KEY.encode(), b"[MASKED:openai_api_key]"
    ).replace(f.CARD.encode(), b"[MASKED:card_number]").replace(b"EMP123456", b"[MASKED:employee_id]")
    exchange = response.headers["x-wardgate-exchange"]
    assert [rule for rule, _, _ in upstream_applied(data_dir, exchange)] == [
        "email", "openai_api_key", "card_number", "employee_id"
    ]  # fmt: skip
    assert leaks(data_dir, SECRETS) == []


async def test_an_http2_upstream_gets_the_masked_body_with_its_length(tmp_path: Path) -> None:
    """client -> front (masking, upstream_protocol h2) -> back (h2c, no masking) -> capture."""
    async with (
        capturing() as upstream,
        running(validate(Config(
            listeners=[ListenerConfig(listen="127.0.0.1:0", upstream=f"http://127.0.0.1:{upstream.port}")],
            storage=StorageConfig(data_dir=str(tmp_path / "back"), durability="batched", group_commit_ms=5),
            admin=AdminConfig(listen=""),
        ))) as back,
        running(config(tmp_path / "front", f"http://127.0.0.1:{back.port}", upstream_protocol="h2")) as front,
    ):  # fmt: skip
        llm = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{front.port}/v1", api_key=CONTRACTOR_KEY, max_retries=0
        )
        async with asyncio.timeout(30), llm:
            await llm.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPT}])
    (captured,) = upstream.requests
    assert "[MASKED:email]" in msgspec.json.decode(captured.body)["messages"][0]["content"]
    (head,) = [
        s.frame.event
        for s in iter_frames(tmp_path / "back")
        if s.frame.direction == Direction.FROM_CLIENT and isinstance(s.frame.event, RequestHead)
    ]
    assert head.http_version == b"2"
    assert (b"content-length", str(len(captured.body)).encode()) in head.headers  # the DATA matched it


async def refusal(
    gw: Gateway, data_dir: Path, content: Any, headers: dict[str, str], *, http2: bool = False
) -> tuple[int, str]:
    """The status and the recorded error kind of one request the gateway must refuse."""
    url = f"http://127.0.0.1:{gw.port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {CONTRACTOR_KEY}", "content-type": "application/json", **headers}
    async with asyncio.timeout(30), httpx.AsyncClient(http1=not http2, http2=http2) as client:
        response = await client.post(url, content=content, headers=headers)
    assert gw.recorder is not None
    await gw.recorder.durable()  # batched: the answer may come before its frames are on disk
    (error,) = [
        fr.event
        for fr in frames_of(data_dir, response.headers["x-wardgate-exchange"])
        if isinstance(fr.event, GatewayError)
    ]
    return response.status_code, error.kind


async def test_bodies_that_cannot_be_masked_are_refused_and_recorded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    big = msgspec.json.encode(chat(PROMPT + " pad" * 5000))

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):  # no Content-Length: the limit hits while the body is read
            yield big[i : i + 1000]

    async with capturing() as upstream, running(config(data_dir, f"http://127.0.0.1:{upstream.port}")) as gw:
        # Over HTTP/2 the refused stream's rest is read, so the client sees the answer (HTTP/1.1 cuts).
        assert await refusal(gw, data_dir, chunked(), {}, http2=True) == (413, "body_too_large")
        bomb = gzip.compress(big)  # small on the wire, over max_body_bytes decoded
        assert await refusal(gw, data_dir, bomb, {"content-encoding": "gzip"}) == (413, "body_too_large")
        assert await refusal(gw, data_dir, b"\x1b\x00", {"content-encoding": "br"}) == (
            415,
            "unmaskable_body",
        )
    assert upstream.requests == []  # nothing reached the model
    assert leaks(data_dir, SECRETS) == []
