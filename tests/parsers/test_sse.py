from __future__ import annotations

import base64
import json
import pathlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from parsers.errors import ParseError
from parsers.events import Direction, SseComment, SseMessage
from parsers.sse import SseEvent, SseParser
from tests.parsers.playbook import Playbook, client, eof, upstream

CAPTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "openai-captures"


def _sse_bodies() -> dict[str, bytes]:
    bodies = {}
    for path in sorted(CAPTURES.glob("*.json")):
        response = json.loads(path.read_text())["response"]
        content_type = next((v for k, v in response["headers"] if k.lower() == "content-type"), "")
        if content_type.startswith("text/event-stream"):
            bodies[path.stem] = base64.b64decode(response["body_b64"])
    return bodies


SSE_BODIES = _sse_bodies()


def parse(*pieces: bytes, max_message_bytes: int = 1 << 20) -> list[SseEvent]:
    parser = SseParser(max_message_bytes=max_message_bytes)
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.feed_eof()


def test_fixtures_are_present() -> None:
    assert len(SSE_BODIES) >= 15


# --- transcripts ------------------------------------------------------------------------------------


def test_message_split_across_reads() -> None:
    assert (
        Playbook(SseParser())
        >> b'data: {"a"'
        >> b":1}\n"
        >> b"\n"
        << SseMessage(data=b'{"a":1}')
        >> b"data: [DONE]\n\n"
        << SseMessage(data=b"[DONE]")
        >> eof()
    )


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: bytes) -> None:
    stream = eol.join([b"event: add", b"data: 1", b"data: 2", b"", b": ping", b"data: 3", b"", b""])
    assert parse(stream) == [
        SseMessage(data=b"1\n2", event=b"add"),
        SseComment(text=b" ping"),
        SseMessage(data=b"3"),
    ]


def test_cr_and_lf_split_across_feeds_are_one_line_ending() -> None:
    assert (
        Playbook(SseParser())
        >> b"data: a\r"
        >> b"\ndata: b\r"
        >> b"\n\r"
        << SseMessage(data=b"a\nb")
        >> b"\n"
        >> b"data: c\r\r"
        << SseMessage(data=b"c")
    )


def test_lone_lf_after_cr_ending_message_is_a_blank_line_not_part_of_crlf() -> None:
    # "\r" ends the line, "\n" completes that CRLF, the next "\n" is the blank line.
    assert parse(b"data: a\r", b"\n", b"\n") == [SseMessage(data=b"a")]
    assert parse(b"data: a\r\r\n\n") == [SseMessage(data=b"a")]


def test_bom_is_stripped_once() -> None:
    bom = b"\xef\xbb\xbf"
    assert parse(bom + b"data: a\n\n") == [SseMessage(data=b"a")]
    assert parse(bom[:1], bom[1:2], bom[2:] + b"data: a\n\n") == [SseMessage(data=b"a")]
    # A second BOM is part of the first field name, which is then unknown and ignored.
    assert parse(bom + bom + b"data: a\n\ndata: b\n\n") == [SseMessage(data=b"b")]
    assert parse(b"data: a\n\n" + bom + b"data: b\n\n") == [SseMessage(data=b"a")]


def test_bytes_that_only_look_like_a_bom_prefix() -> None:
    assert parse(b"\xef", b"\xbb:x\n") == []  # field "\xef\xbb", unknown
    assert parse(b"\xef", b"\n: c\n") == [SseComment(text=b" c")]
    assert parse(b"\xef\xbbdata: a\n\ndata: b\n\n") == [SseMessage(data=b"b")]


def test_comments_are_raw_and_do_not_dispatch() -> None:
    assert (
        Playbook(SseParser())
        >> b": OPENROUTER PROCESSING\n\n"
        << SseComment(text=b" OPENROUTER PROCESSING")
        >> b"data: a\n:\n:: two\n"
        << SseComment(text=b"")
        << SseComment(text=b": two")
        >> b"data: b\n\n"
        << SseMessage(data=b"a\nb")
    )


@pytest.mark.parametrize(
    ("stream", "data"),
    [
        (b"data: a\ndata: b\n\n", b"a\nb"),
        (b"data:a\n\n", b"a"),
        (b"data:  two spaces\n\n", b" two spaces"),
        (b"data:\n\n", b""),
        (b"data\n\n", b""),
        (b"data: a\ndata:\n\n", b"a\n"),
        (b"data:\ndata:\n\n", b"\n"),
        (b"data: a:b: c\n\n", b"a:b: c"),
        (b"data: \xff\xfe not utf-8\n\n", b"\xff\xfe not utf-8"),
    ],
)
def test_data_lines(stream: bytes, data: bytes) -> None:
    assert parse(stream) == [SseMessage(data=data)]


def test_event_type_applies_to_one_message() -> None:
    assert parse(b"event: response.created\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n") == [
        SseMessage(data=b"1", event=b"response.created"),
        SseMessage(data=b"2"),
        SseMessage(data=b"3"),
    ]


def test_id_rules() -> None:
    assert parse(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\x00y\ndata: d\n\n") == [
        SseMessage(data=b"a", id=b"7"),
        SseMessage(data=b"b"),
        SseMessage(data=b"c", id=b""),
        SseMessage(data=b"d"),  # an id holding NUL is ignored
    ]


@pytest.mark.parametrize(
    ("value", "retry_ms"),
    [
        (b"3000", 3000),
        (b"0", 0),
        (b" 5", None),
        (b"", None),
        (b"-1", None),
        (b"1.5", None),
        (b"1a", None),
        (b"\xd9\xa1", None),  # ARABIC-INDIC DIGIT ONE: not an ASCII digit
        (b"9" * 18, int(b"9" * 18)),
        (b"9" * 19, None),  # would not fit int64 in a recorded frame
        (b"1" * 5000, None),
    ],
)
def test_retry_takes_ascii_digits_only(value: bytes, retry_ms: int | None) -> None:
    assert parse(b"retry: " + value + b"\ndata: a\n\n") == [SseMessage(data=b"a", retry_ms=retry_ms)]


@pytest.mark.parametrize(
    "stream",
    [b"event: x\n\n", b"id: 1\n\n", b"retry: 10\n\n", b"\n\n\n", b"Data: a\n\n", b"foo: bar\n\n"],
)
def test_block_without_data_lines_is_not_dispatched(stream: bytes) -> None:
    assert parse(stream + b"data: next\n\n") == [SseMessage(data=b"next")]


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: 1\ndata: a\nbar\nDATA: b\n\n") == [SseMessage(data=b"a")]


@pytest.mark.parametrize("tail", [b"data: a\n", b"data: a", b"event: e\ndata: a\r", b": partial"])
def test_eof_discards_incomplete_message(tail: bytes) -> None:
    assert Playbook(SseParser()) >> b"data: done\n\n" << SseMessage(data=b"done") >> tail >> eof()


def test_feed_after_eof_raises() -> None:
    parser = SseParser()
    parser.feed_eof()
    with pytest.raises(ParseError, match="after EOF"):
        parser.feed(b"data: a\n\n")


def test_long_line_raises_and_parser_goes_inert() -> None:
    parser = SseParser(max_message_bytes=64)
    assert parser.feed(b"data: " + b"x" * 50 + b"\n\n") == [SseMessage(data=b"x" * 50)]
    with pytest.raises(
        ParseError, match=r"sse: unterminated line of at least 70 bytes exceeds max_message_bytes=64"
    ):
        parser.feed(b"data: " + b"x" * 64)
    with pytest.raises(ParseError, match="inert"):
        parser.feed(b"\n\n")


def test_message_made_of_many_short_lines_is_bounded() -> None:
    parser = SseParser(max_message_bytes=64)
    with pytest.raises(ParseError, match=r"message of at least 66 bytes .* \(offset 55\)"):
        parser.feed(b"data: 1234\n" * 6)


def test_long_comment_is_bounded() -> None:
    with pytest.raises(ParseError, match="comment line of 65 bytes"):
        SseParser(max_message_bytes=64).feed(b":" + b"c" * 64 + b"\n")


def test_default_bound_is_16_mib() -> None:
    parser = SseParser()
    body = b"x" * (1 << 20)
    for _ in range(15):
        assert parser.feed(body) == []
    with pytest.raises(ParseError, match="max_message_bytes=16777216"):
        parser.feed(body + b"x")


def test_long_line_in_small_pieces_is_assembled() -> None:
    line = b"data: " + b"y" * 200_000
    pieces = [line[i : i + 1000] for i in range(0, len(line), 1000)]
    assert parse(*pieces, b"\n\n") == [SseMessage(data=b"y" * 200_000)]


# --- recorded streams ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SSE_BODIES))
def test_fixture_split_at_every_byte_of_every_message(name: str) -> None:
    # Between two messages the parser holds no state (the fixtures use LF only), so splitting each message
    # block at every position covers every split point of the whole stream at linear cost.
    body = SSE_BODIES[name]
    assert body.endswith(b"\n\n")
    assert b"\r" not in body
    whole = parse(body)
    with_data = [block for block in _blocks(body) if b"\ndata:" in b"\n" + block]
    assert sum(isinstance(e, SseMessage) for e in whole) == len(with_data) > 0
    assert whole == [event for block in _blocks(body) for event in parse(block)]
    for block in _blocks(body):
        expected = parse(block)
        for i in range(len(block) + 1):
            assert parse(block[:i], block[i:]) == expected, (name, block[:i])


@pytest.mark.parametrize("name", [n for n, body in sorted(SSE_BODIES.items()) if len(body) < 4000])
def test_small_fixture_split_at_every_byte_of_the_stream(name: str) -> None:
    body = SSE_BODIES[name]
    expected = parse(body)
    for i in range(len(body) + 1):
        assert parse(body[:i], body[i:]) == expected


@pytest.mark.parametrize("name", sorted(SSE_BODIES))
def test_fixture_fed_byte_by_byte(name: str) -> None:
    body = SSE_BODIES[name]
    assert parse(*(body[i : i + 1] for i in range(len(body)))) == parse(body)


def _blocks(body: bytes) -> list[bytes]:
    return [block + b"\n\n" for block in body.split(b"\n\n")[:-1]]


# --- properties --------------------------------------------------------------------------------------

_values = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_lines = st.one_of(
    st.tuples(st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"x"]), _values).map(
        lambda fv: fv[0] + b": " + fv[1]
    ),
    st.just(b""),
    st.just(b"data"),
    st.sampled_from([b"retry: 10", b"id: a\x00b", b": comment"]),
)
_eols = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def event_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_lines, _eols), max_size=30))
    prefix = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return prefix + b"".join(line + eol for line, eol in lines)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(event_streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_rechunking_gives_the_same_events(stream: bytes, cuts: list[int]) -> None:
    assert parse(*_chunked(stream, cuts)) == parse(stream)


@given(st.sampled_from(sorted(SSE_BODIES)), st.lists(st.integers(min_value=0), max_size=40))
def test_rechunking_a_fixture_gives_the_same_events(name: str, cuts: list[int]) -> None:
    body = SSE_BODIES[name]
    assert parse(*_chunked(body, cuts)) == parse(body)


_message = st.tuples(
    st.lists(_values, min_size=1, max_size=3),
    _values,
    st.one_of(st.none(), _values.filter(lambda v: b"\0" not in v)),
    _eols,
)


@given(st.lists(_message, max_size=8))
def test_serialized_messages_parse_back(
    messages: list[tuple[list[bytes], bytes, bytes | None, bytes]],
) -> None:
    stream = b""
    expected = []
    for data_lines, event, id_, eol in messages:
        fields = [b"event: " + event] + [b"data: " + line for line in data_lines]
        fields += [] if id_ is None else [b"id: " + id_]
        stream += eol.join(fields) + eol + eol
        expected.append(SseMessage(data=b"\n".join(data_lines), event=event, id=id_))
    assert parse(stream) == expected


@given(st.lists(st.binary(max_size=40), max_size=8))
@example([b"\r", b"\n\n"])
@example([b"\xef\xbb", b"\xbf\r\r"])
def test_random_bytes_give_events_or_parse_error(pieces: list[bytes]) -> None:
    parser = SseParser(max_message_bytes=32)
    error = ""
    try:
        for piece in pieces:
            for event in parser.feed(piece):
                assert isinstance(event, SseMessage | SseComment)
    except ParseError as exc:
        error = str(exc)
    assert error == "" or error.startswith("sse: ")
    assert parser.feed_eof() == []


# --- the Playbook helper itself ----------------------------------------------------------------------


def test_playbook_reports_where_transcripts_diverge() -> None:
    playbook = Playbook(SseParser()) >> b"data: a\n" >> b"\n" << SseMessage(data=b"b")
    with pytest.raises(
        AssertionError, match=r"!! expected: << SseMessage\(.*data=b'b'.*\n   actual:   << SseMessage"
    ):
        bool(playbook)


def test_playbook_drives_direction_aware_parsers() -> None:
    class Echo:
        def feed(self, direction: Direction, data: bytes, /) -> list[object]:
            return [(direction, data)]

        def feed_eof(self, direction: Direction, /) -> list[object]:
            return [(direction, "eof")]

    assert (
        Playbook(Echo())
        >> client(b"GET")
        << (Direction.FROM_CLIENT, b"GET")
        >> upstream(b"200")
        << (Direction.FROM_UPSTREAM, b"200")
        >> eof(Direction.FROM_UPSTREAM)
        << (Direction.FROM_UPSTREAM, "eof")
    )


def _outcome(
    pieces: list[bytes], max_message_bytes: int, *, shortcut: bool = True
) -> tuple[list[SseEvent], bool]:
    """The events up to a failure, and whether the parser failed (``shortcut``: whole events in one
    step, else always the line scanner)."""
    parser = SseParser(max_message_bytes=max_message_bytes)
    if not shortcut:
        setattr(parser, "_one_event", lambda data: None)  # noqa: B010 (replaced on one instance)
    events: list[SseEvent] = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
    except ParseError:
        return events, True
    return events + parser.feed_eof(), False


_reads = st.lists(
    st.sampled_from(
        [
            *(b"data: a\n\n", b"data: 0123456789\n\n", b"data: \n\n", b"event: e\n", b"id: 7\n"),
            *(b": note\n", b"data: x\r\n\r\n", b"\r", b"\n", b"data: y\n", b"data:z\n\n", b"\xef\xbb\xbf"),
            b"data: a\n\nb",
        ]
    ),
    max_size=10,
)


@given(_reads, st.integers(min_value=6, max_value=20))
def test_one_event_per_read_parses_like_the_line_scanner(reads: list[bytes], limit: int) -> None:
    """Whole single-line events take a shortcut when nothing is pending; it must change nothing."""
    assert _outcome(reads, limit) == _outcome(reads, limit, shortcut=False)


@pytest.mark.parametrize("name", sorted(SSE_BODIES))
def test_fixture_one_event_per_read(name: str) -> None:
    body = SSE_BODIES[name]
    assert parse(*_blocks(body)) == parse(*[body[i : i + 1] for i in range(len(body))])
