"""Errors raised by parsers. No h11, h2 or JSON exception crosses out of ``parsers/``."""


class ParseError(Exception):
    """Bytes that do not follow the protocol. The message says what was expected, what came, and where."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


__all__ = ["ParseError"]
