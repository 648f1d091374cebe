"""OpenAI event streams: a secret spread over many delta events is masked, for any split of the bytes."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from parsers.masking import SseMasker, mask_text, select, sse
from tests.parsers.masking.fixtures import AWS_KEY_ID, EMAIL, OPENAI_KEY
from tests.parsers.masking.strategies import cuts, split, texts

RULES = select()


def chat_stream(content: list[str], arguments: list[str] = (), finish_with_content: bool = False) -> bytes:  # type: ignore[assignment]
    events: list[dict[str, Any]] = []
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    for i, token in enumerate(content):
        last = finish_with_content and i == len(content) - 1 and not arguments
        choice = {"index": 0, "delta": {"content": token}, "finish_reason": "stop" if last else None}
        events.append({**base, "choices": [choice]})
    for i, piece in enumerate(arguments):
        call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
        if i == 0:
            call.update(id="call_1", type="function", function={"name": "shell", "arguments": piece})
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
        )
    if not (finish_with_content and content) or arguments:
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})
    body = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    return body + b"data: [DONE]\n\n"


def run(body: bytes, points: list[int]) -> bytes:
    masker = SseMasker(RULES)
    return b"".join(masker.feed(piece) for piece in split(body, points)) + masker.finish()


def assembled(body: bytes) -> tuple[str, str, list[str | None]]:
    """Content and tool arguments as a client accumulates them, and each choice's finish_reason."""
    content, arguments, finishes = "", "", []
    for block in body.split(b"\n\n"):
        if not block.startswith(b"data: {"):
            continue
        for choice in msgspec.json.decode(block[6:])["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                arguments += call["function"].get("arguments") or ""
            finishes.append(choice["finish_reason"])
    return content, arguments, finishes


tokens = st.lists(texts, max_size=8)


@given(tokens, tokens, st.booleans(), st.data())
def test_deltas_mask_like_the_whole_text_for_any_split(
    content: list[str], arguments: list[str], finish_with_content: bool, data: st.DataObject
) -> None:
    body = chat_stream(content, arguments, finish_with_content)
    whole = run(body, [])
    got_content, got_arguments, finishes = assembled(whole)
    assert got_content == mask_text(RULES, "".join(content))[0]
    assert got_arguments == mask_text(RULES, "".join(arguments))[0]
    assert finishes.count("stop") == 1
    assert run(body, data.draw(cuts(len(body)))) == whole


def test_secret_spread_over_one_character_events() -> None:
    text = f"key {AWS_KEY_ID} mail {EMAIL} and {OPENAI_KEY}"
    body = chat_stream(list(text))
    out = run(body, list(range(0, len(body), 7)))
    for secret in (AWS_KEY_ID, EMAIL, OPENAI_KEY):
        assert secret.encode() not in out
    assert assembled(out)[0] == "key [MASKED:aws_access_key] mail [MASKED:email] and [MASKED:openai_api_key]"


def test_nothing_to_mask_keeps_every_byte_and_holds_only_an_event() -> None:
    body = chat_stream(["Hello", " world", ". Bye", "!"])
    assert run(body, []) == body
    events = [block + b"\n\n" for block in body.split(b"\n\n")[:-1]]
    masker = SseMasker(RULES)
    assert masker.feed(events[0]) == b""  # "Hello" might still become an e-mail address
    assert masker.feed(events[1]) == events[0]  # " world" ended the word; "world" is held now
    assert masker.feed(events[2]) == events[1]
    assert masker.take_hits() == []


@given(tokens, st.data())
def test_unmasked_streams_pass_byte_for_byte(content: list[str], data: st.DataObject) -> None:
    body = chat_stream(content)
    if mask_text(RULES, "".join(content))[1]:
        return
    assert run(body, data.draw(cuts(len(body)))) == body


def test_responses_api_deltas() -> None:
    events = [
        {
            "type": "response.output_text.delta",
            "item_id": "m1",
            "output_index": 0,
            "content_index": 0,
            "delta": d,
        }
        for d in ["mail al", "ice@exam", "ple.org now"]
    ]
    events.append(
        {"type": "response.output_text.done", "item_id": "m1", "text": "mail alice@example.org now"}
    )
    body = b"".join(b"event: x\ndata: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    out = run(body, [])
    deltas = [
        msgspec.json.decode(block.split(b"data: ", 1)[1])
        for block in out.split(b"\n\n")
        if b"data: " in block
    ]
    assert "".join(d["delta"] for d in deltas if d["type"].endswith(".delta")) == "mail [MASKED:email] now"
    assert deltas[-1]["text"] == "mail [MASKED:email] now"
    assert b"event: x\n" in out


def test_events_that_are_not_json_are_masked_as_text() -> None:
    body = b": keep-alive " + EMAIL.encode() + b"\n\ndata: not json " + AWS_KEY_ID.encode() + b"\n\n"
    out = run(body, [5, 40])
    assert out == b": keep-alive [MASKED:email]\n\ndata: not json [MASKED:aws_access_key]\n\n"


def test_hits_name_the_field() -> None:
    masker = SseMasker(RULES)
    masker.feed(chat_stream(["key AKIA", "IOSFODNN7EXAMPLE", " ok"]))
    masker.finish()
    assert [(hit.rule, field) for hit, field in masker.take_field_hits()] == [
        ("aws_access_key", "choices[0].delta.content")
    ]


_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers() | st.sampled_from(["x", "delta", "content", "arguments", "text", "a.delta"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["choices", "delta", "content", "tool_calls", "function", "arguments", "index"])
            | st.sampled_from(["text", "type", "item_id", "refusal", "reasoning"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=14,
)


@given(st.dictionaries(st.sampled_from(["choices", "delta", "type", "id", "item_id"]), _json, max_size=5))
@example({"choices": [{"text": "a", "index": 2}, {"text": "b"}]})
@example({"choices": [{"delta": {"content": "a", "role": "r", "refusal": "c", "reasoning": "d", "x": "y"}}]})
@example({"choices": [{"index": 1, "delta": {"tool_calls": [{"index": 3, "function": {"arguments": "x"}}]}}]})
@example({"choices": [["a"], "b", {"delta": ["c"]}, {"delta": {"x": {"content": "d"}}, "m": {"text": "e"}}]})
@example({"type": "a.delta", "delta": "x", "item_id": "i", "output_index": 0})
def test_strings_and_stream_keys_walk_like_the_generic_walk(doc: dict[str, Any]) -> None:
    strings = sse._strings(doc, (), [])
    assert sse._strings_and_keys(doc) == (strings, [sse._stream_key(doc, path) for path, _ in strings])


def test_odd_shapes_under_choices_are_masked_not_fatal() -> None:
    body = b'data: {"choices": [["' + EMAIL.encode() + b'", {"delta": 1}], "x"]}\n\n'
    out = run(body, [7])
    assert EMAIL.encode() not in out
    assert msgspec.json.decode(out[6:]) == {"choices": [["[MASKED:email]", {"delta": 1}], "x"]}


def fed(masker: SseMasker, body: bytes, points: list[int]) -> tuple[bytes, list[tuple[Any, str]]]:
    out = b"".join(masker.feed(piece) for piece in split(body, points)) + masker.finish()
    return out, masker.take_field_hits()


def full_walk() -> SseMasker:
    """A masker that never takes the shortcut for chunks like the last one."""
    masker = SseMasker(RULES)
    setattr(masker, "_remember", lambda *args: None)  # noqa: B010 (a method, replaced on one instance)
    return masker


@given(tokens, st.booleans(), st.data())
def test_chunks_like_the_last_one_mask_as_the_full_walk_does(
    content: list[str], finish_with_content: bool, data: st.DataObject
) -> None:
    body = chat_stream(content, [], finish_with_content)
    points = data.draw(cuts(len(body)))
    assert fed(SseMasker(RULES), body, points) == fed(full_walk(), body, points)


def test_the_shortcut_is_taken_and_keeps_secrets_masked() -> None:
    text = f"key {AWS_KEY_ID} mail {EMAIL} and {OPENAI_KEY} end"
    body = chat_stream(list(text))
    masker = SseMasker(RULES)
    events = [block + b"\n\n" for block in body.split(b"\n\n")[:-1]]
    out = b"".join(masker.feed(event) for event in events[:3])
    assert masker._template is not None  # the second event already matched the first one's bytes
    out += b"".join(masker.feed(event) for event in events[3:]) + masker.finish()
    assert (out, masker.take_field_hits()) == fed(full_walk(), body, [])
    assert (
        assembled(out)[0] == "key [MASKED:aws_access_key] mail [MASKED:email] and [MASKED:openai_api_key] end"
    )


def test_duplicate_content_keys_take_the_full_walk() -> None:
    event = b'data: {"choices":[{"index":0,"delta":{"content":"a","content":"b"},"finish_reason":null}]}\n\n'
    masker = SseMasker(RULES)
    masker.feed(event)
    assert masker._template is None


def test_a_secret_in_a_duplicate_key_decoding_drops_is_masked() -> None:
    # Decoding keeps the last "id"; the first one must not reach the log because nothing looked at it.
    event = f'data: {{"id":"{AWS_KEY_ID}","id":"x","choices":[{{"index":0,"delta":{{"content":"hi"}}}}]}}\n\n'
    for repeat in (1, 2):  # also after a plain chunk of the same shape made a template
        masker = SseMasker(RULES)
        plain = b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        out = b"".join(masker.feed(plain) for _ in range(repeat - 1))
        out += masker.feed(event.encode()) + masker.finish()
        assert AWS_KEY_ID.encode() not in out
        assert b"[MASKED:aws_access_key]" in out


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=5), _JSON, max_size=5))
def test_the_duplicate_key_check_counts_every_string_of_a_document_without_them(doc: dict[str, Any]) -> None:
    # No false alarms: an event without duplicate keys keeps its JSON-aware masking.
    data = msgspec.json.encode(doc)
    assert len(sse._STRING.findall(data)) == sse._string_count(msgspec.json.decode(data))
