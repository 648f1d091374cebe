"""The body-framing scanner: transcripts, every split point, and differential tests against h11.

Any disagreement with h11 about where a body ends is a smuggling risk, so the hypothesis tests feed the
same bytes, split the same way, to both and require the same body, end, trailers and verdict.
"""

from __future__ import annotations

import dataclasses
import itertools

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from parsers.body_framing import BodyScanner, Chunked, ContentLength, Framing, UntilClose
from parsers.errors import ParseError
from parsers.events import Headers


@dataclasses.dataclass(frozen=True)
class Outcome:
    verdict: str  # "done" | "waiting" | "error"
    body: bytes  # decoded body bytes delivered before the verdict (compared unless "error")
    end: int  # where the message ended in the fed bytes ("done" only)
    trailers: Headers


def scan(framing: Framing, pieces: list[bytes], *, eof: bool = False, limit: int = 16 * 1024) -> Outcome:
    scanner = BodyScanner(framing, max_incomplete_bytes=limit)
    body = bytearray()
    end = 0
    trailers: Headers = []
    try:
        for piece in pieces:
            result = scanner.feed(piece)
            body += b"".join(result.pieces)
            end += result.consumed
            trailers = result.trailers
        if eof:
            result = scanner.feed_eof()
            trailers = result.trailers
    except ParseError:
        return Outcome("error", b"", 0, [])
    if scanner.done:
        return Outcome("done", bytes(body), end, trailers)
    return Outcome("waiting", bytes(body), 0, [])


def h11_head(framing: Framing) -> bytes:
    match framing:
        case ContentLength(length=length):
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length
        case Chunked():
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        case UntilClose():
            return b"HTTP/1.1 200 OK\r\n\r\n"


def reference(framing: Framing, pieces: list[bytes], *, eof: bool = False, limit: int = 16 * 1024) -> Outcome:
    """What h11, as a client that sent a request, makes of the same response body bytes."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limit)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "example")]))
    conn.send(h11.EndOfMessage())
    body = bytearray()
    fed = 0
    trailers: Headers = []
    done = False

    def drain() -> None:
        nonlocal done, trailers
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Data):
                body.extend(event.data)
            elif isinstance(event, h11.EndOfMessage):
                done = True
                trailers = event.headers.raw_items()

    try:
        conn.receive_data(h11_head(framing))
        drain()
        for piece in pieces:
            if done:
                break  # h11 holds the rest in its buffer, paused
            conn.receive_data(piece)
            fed += len(piece)
            drain()
        if eof and not done:
            conn.receive_data(b"")
            drain()
    except h11.RemoteProtocolError:
        return Outcome("error", b"", 0, [])
    if done:
        return Outcome("done", bytes(body), fed - len(conn.trailing_data[0]), trailers)
    return Outcome("waiting", bytes(body), 0, [])


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# --- transcripts ------------------------------------------------------------------------------------


def test_chunked_body_with_extension_and_trailers() -> None:
    scanner = BodyScanner(Chunked())
    first = scanner.feed(b"5;name=value\r\nhel")
    assert (first.pieces, first.consumed, first.done) == ([b"hel"], 17, False)
    last = scanner.feed(b"lo\r\n0\r\nX-Checksum: abc\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert last.pieces == [b"lo"]
    assert last.done
    assert last.consumed == len(b"lo\r\n0\r\nX-Checksum: abc\r\n\r\n")
    assert last.trailers == [(b"X-Checksum", b"abc")]
    assert scanner.feed(b"more").consumed == 0


def test_content_length_body_ends_mid_read() -> None:
    scanner = BodyScanner(ContentLength(4))
    assert scanner.feed(b"ab").pieces == [b"ab"]
    end = scanner.feed(b"cdGET / HTTP/1.1\r\n")
    assert (end.pieces, end.consumed, end.done) == ([b"cd"], 2, True)


def test_empty_content_length_is_done_at_once() -> None:
    assert BodyScanner(ContentLength(0)).feed(b"next").consumed == 0


def test_until_close_ends_at_eof() -> None:
    scanner = BodyScanner(UntilClose())
    assert scanner.feed(b"abc").pieces == [b"abc"]
    assert scanner.feed_eof().done


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"5\nhello\r\n0\r\n\r\n", "illegal chunk header"),  # bare LF ends no chunk-size line
        (b"5\r\nhello\n0\r\n\r\n", "expected CRLF after chunk data"),
        (b"5\r\nhelloXX0\r\n\r\n", "expected CRLF after chunk data"),
        (b"0x5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b" 5\r\nhello\r\n0\r\n\r\n", "illegal chunk header"),
        (b"1" * 21 + b"\r\n", "illegal chunk header"),
        (b"0\r\nbad trailer\r\n\r\n", "illegal trailer line"),
        (b"0\r\n folded\r\n\r\n", "continuation line at start of trailers"),
        (b"0\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length trailer"),
        (b"0\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding trailer"),
    ],
)
def test_rejects_what_h11_rejects(body: bytes, where: str) -> None:
    with pytest.raises(ParseError, match=where):
        BodyScanner(Chunked()).feed(body)
    assert reference(Chunked(), [body]).verdict == "error"


def test_error_names_the_byte_offset() -> None:
    scanner = BodyScanner(Chunked())
    scanner.feed(b"3\r\nabc")
    with pytest.raises(ParseError, match=r"body byte 6\)"):
        scanner.feed(b"\n")
    with pytest.raises(ParseError, match="after an error"):
        scanner.feed(b"\r\n")


def test_error_in_a_line_split_across_reads_names_where_it_began() -> None:
    scanner = BodyScanner(Chunked())
    scanner.feed(b"1\r\na\r\n1")
    with pytest.raises(ParseError, match=r"illegal chunk header b'1g' \(body byte 6\)"):
        scanner.feed(b"g\r\n")


def test_incomplete_line_over_the_limit() -> None:
    scanner = BodyScanner(Chunked(), max_incomplete_bytes=8)
    with pytest.raises(ParseError, match="longer than 8 bytes") as err:
        scanner.feed(b"5;" + b"x" * 7)
    assert err.value.status_hint == 431
    # In one read the same line is fine, for h11 too: the limit is on what waits for more bytes.
    assert BodyScanner(Chunked(), max_incomplete_bytes=8).feed(b"5;" + b"x" * 7 + b"\r\n").consumed == 11


def test_eof_before_the_end_is_an_error() -> None:
    scanner = BodyScanner(Chunked())
    scanner.feed(b"5\r\nhel")
    with pytest.raises(ParseError, match="closed in the chunk data"):
        scanner.feed_eof()


# --- every split point ------------------------------------------------------------------------------

SPLIT_CASES: list[tuple[Framing, bytes]] = [
    (
        Chunked(),
        b"5;a=b;c\r\nhello\r\n10 \t\r\n0123456789abcdef\r\n0;last\r\nX-A: 1\r\nX-B:  two  \r\n\r\nNEXT",
    ),
    (Chunked(), b"A\r\n0123456789\r\n0\r\nX: y\n folded\n\nNEXT"),
    (Chunked(), b"1\r\na\r\n0\r\n\r\n"),
    (ContentLength(11), b"hello world\r\nNEXT"),
]


@pytest.mark.parametrize(("framing", "data"), SPLIT_CASES)
def test_every_split_point_agrees(framing: Framing, data: bytes) -> None:
    whole = scan(framing, [data])
    assert whole == reference(framing, [data])
    assert whole.verdict == "done"
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            pieces = [p for p in (data[:i], data[i:j], data[j:]) if p]
            assert scan(framing, pieces) == whole, (i, j)
    for i in range(len(data) + 1):
        pieces = [data[k : k + 1] for k in range(i)] + [data[i:]]
        assert scan(framing, [p for p in pieces if p]) == whole, i


# --- differential: the scanner against h11 ----------------------------------------------------------

HEX_CASES = st.sampled_from(["x", "X"])
SIZE_PADDING = st.integers(min_value=0, max_value=21)
EXT_BYTES = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b""))
TOKEN = st.text(alphabet="abcXYZ-_!~09", min_size=1, max_size=8).map(str.encode)
VALUE = st.text(alphabet="ab c\t\x01\x7f\xe9:;", max_size=10).map(lambda s: s.encode("latin-1"))
EOL = st.sampled_from([b"\r\n", b"\n"])
# Mostly right; sometimes a bare LF, a doubled LF, a lone CR or nothing where CRLF belongs.
LINE_END = st.sampled_from([b"\r\n"] * 24 + [b"\n", b"\n\n", b"\r", b"\r\r\n", b""])


@st.composite
def chunk(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(min_size=1, max_size=40))
    size = draw(st.sampled_from([len(data)] * 6 + [len(data) + 1, len(data) - 1, 16**20 - 1, 16**19]))
    digits = f"{size:{draw(HEX_CASES)}}"
    digits = "0" * min(draw(SIZE_PADDING), 21 - len(digits)) + digits  # 21 digits is one too many
    ext = b";" + draw(EXT_BYTES) if draw(st.booleans()) else b""
    ows = draw(st.sampled_from([b"", b" ", b"\t \t"])) if not ext else b""
    header_end = draw(LINE_END)
    return digits.encode() + ext + ows + header_end + data + draw(LINE_END)


@st.composite
def trailer_section(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([b"Content-Length", b"transfer-encoding", b"X-Sum"]) | TOKEN)
        line = name + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + draw(VALUE)
        if draw(st.booleans()):
            line += draw(EOL) + draw(st.sampled_from([b" ", b"\t"])) + draw(VALUE)  # obs-fold
        lines.append(line + draw(EOL))
    return b"".join(lines) + draw(EOL)


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    chunks = draw(st.lists(chunk(), max_size=5))
    last = b"0" * draw(st.integers(1, 3)) + (b";" + draw(EXT_BYTES) if draw(st.booleans()) else b"")
    return b"".join(chunks) + last + b"\r\n" + draw(trailer_section())


INTERESTING = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b";", b" ", b"\t", b"0", b"f", b"g", b":", b"\x00", b"1" * 21]
)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        junk = draw(INTERESTING | st.binary(min_size=1, max_size=3))
        match draw(st.sampled_from(["insert", "replace", "delete"])):
            case "insert":
                data[at:at] = junk
            case "replace":
                data[at : at + len(junk)] = junk
            case "delete":
                del data[at : at + draw(st.integers(1, 3))]
    return bytes(data)


@st.composite
def chunked_stream(draw: st.DrawFn) -> bytes:
    body = draw(chunked_body())
    match draw(st.sampled_from(["valid", "mutated", "random"])):
        case "mutated":
            body = draw(mutated(body))
        case "random":
            body = draw(st.binary(max_size=60))
    return body + draw(st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n", b"\r\n", b"garbage"]))


CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)
LIMITS = st.sampled_from([16 * 1024, 0]) | st.integers(min_value=1, max_value=24)


# The differential tests are the scanner's whole claim to correctness: several times the profile's count.
DIFFERENTIAL = settings(max_examples=6 * settings().max_examples)


def both(framing: Framing, data: bytes, cuts: list[int], eof: bool, limit: int) -> Outcome:
    pieces = split_at(data, cuts)
    ours = scan(framing, pieces, eof=eof, limit=limit)
    theirs = reference(framing, pieces, eof=eof, limit=limit)
    assert ours == theirs, (data, pieces)
    return ours


@DIFFERENTIAL
@given(chunked_stream(), CUTS, st.booleans(), LIMITS)
@example(b"5\r\nhello\n\n0\r\n\r\n", [], False, 16 * 1024)
@example(b"5\r\nhello\r\n0\r\n\r\n", [], False, 16 * 1024)
@example(b"5;\r\r\nhello\r\n0\r\n\r\n", [], False, 16 * 1024)
@example(b"5\r\r\nhello\r\n0\r\n\r\n", [], False, 16 * 1024)
@example(b"0\r\n\r", [4], False, 16 * 1024)
@example(b"0\r\n\rX\n\n", [4], False, 16 * 1024)
@example(b"0\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n", [], False, 16 * 1024)
@example(b"0\r\nTransfer-Encoding: CHUNKED\r\n\r\n", [], False, 16 * 1024)
@example(b"1;" + b"x" * 30 + b"\r\na\r\n0\r\n\r\n", [10], False, 24)
@example(b"1\r", [2], True, 16 * 1024)
@example(b"1;xxxx", [], False, 6)  # waiting with exactly the limit buffered is fine
@example(b"0\r\nX: y\r\n", [], False, 8)
@example(b"1" * 21 + b"\r\n", [], False, 16 * 1024)
def test_chunked_agrees_with_h11(data: bytes, cuts: list[int], eof: bool, limit: int) -> None:
    both(Chunked(), data, cuts, eof, limit)


@DIFFERENTIAL
@given(st.integers(0, 40), st.binary(max_size=60), CUTS, st.booleans())
def test_content_length_agrees_with_h11(length: int, data: bytes, cuts: list[int], eof: bool) -> None:
    both(ContentLength(length), data, cuts, eof, 16 * 1024)


@DIFFERENTIAL
@given(st.binary(max_size=60), CUTS, st.booleans())
def test_until_close_agrees_with_h11(data: bytes, cuts: list[int], eof: bool) -> None:
    both(UntilClose(), data, cuts, eof, 16 * 1024)
