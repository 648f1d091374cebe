"""Configuration of the mock LLM server; validated here so the CLI and the Python API agree."""

from __future__ import annotations

from pathlib import Path

import msgspec


class MockLlmConfig(msgspec.Struct, kw_only=True):
    """How the mock answers. Every field has a default that suits a fast test."""

    tokens: int = 16
    """Completion tokens per response (a request's smaller `max_tokens` wins)."""
    token_delay_ms: float = 0.0
    """Delay between streamed tokens; each token is its own write either way."""
    model: str = "mock-gpt"
    """The model `/v1/models` lists; generation endpoints echo the request's model."""
    tool_call_every: int = 0
    """0: never; N: every Nth chat (and, separately, Responses) request answers with a tool call."""
    replay_dir: Path | None = None
    """Serve the capture named by a request's `X-Mock-Capture` header from this directory."""

    def validate(self) -> None:
        """Raises: ValueError naming the first bad field."""
        if self.tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {self.tokens}")
        if not self.token_delay_ms >= 0:  # also rejects NaN
            raise ValueError(f"token_delay_ms must be >= 0, got {self.token_delay_ms}")
        if not self.model:
            raise ValueError("model must not be empty")
        if self.tool_call_every < 0:
            raise ValueError(f"tool_call_every must be >= 0, got {self.tool_call_every}")
        if self.replay_dir is not None and not self.replay_dir.is_dir():
            raise ValueError(f"replay_dir {str(self.replay_dir)!r} is not a directory")
