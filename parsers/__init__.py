"""Sans-IO parsers: bytes or HTTP events in, events and summaries out.

Pure by rule: nothing here does I/O, reads the clock, starts tasks or imports gateway/ or storage/.
"""

from parsers.errors import ParseError
from parsers.events import (
    ANONYMOUS,
    BodyChunk,
    ConnectionClosed,
    Direction,
    Event,
    ExchangeEnded,
    ExchangeStarted,
    GatewayError,
    Headers,
    Identity,
    MessageEnd,
    ParseFailed,
    RecordedEvent,
    RequestHead,
    ResponseHead,
    SessionStarted,
    SseComment,
    SseMessage,
)
from parsers.openai import (
    TRUNCATED_MARKER,
    ChatMessage,
    LlmSummary,
    OpenAIExchange,
    ToolCall,
    Usage,
    detect_api,
)
from parsers.sse import DEFAULT_MAX_MESSAGE_BYTES, SseEvent, SseParser

__all__ = [
    "ANONYMOUS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "TRUNCATED_MARKER",
    "BodyChunk",
    "ChatMessage",
    "ConnectionClosed",
    "Direction",
    "Event",
    "ExchangeEnded",
    "ExchangeStarted",
    "GatewayError",
    "Headers",
    "Identity",
    "LlmSummary",
    "MessageEnd",
    "OpenAIExchange",
    "ParseError",
    "ParseFailed",
    "RecordedEvent",
    "RequestHead",
    "ResponseHead",
    "SessionStarted",
    "SseComment",
    "SseEvent",
    "SseMessage",
    "SseParser",
    "ToolCall",
    "Usage",
    "detect_api",
]
