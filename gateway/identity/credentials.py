"""The upstream's credential, held by the gateway: loaded once from an environment variable or a file.

``UpstreamCredential.apply(headers)`` removes every credential a client sent (``Authorization``,
``Proxy-Authorization``, ``api-key``, ``x-api-key`` and the configured header, in any case, any number
of times) and adds the
gateway's own, so nothing a client sends can reach the upstream as the upstream's credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.config import ConfigError, UpstreamCredentialConfig
from parsers.events import Headers

# Every header an LLM API reads a key from (OpenAI, Azure OpenAI, Anthropic-style), whatever is configured.
_ALWAYS_STRIPPED = frozenset({b"authorization", b"proxy-authorization", b"api-key", b"x-api-key"})


class UpstreamCredential:
    """What the upstream gets instead of the client's credentials (``value`` None: nothing)."""

    def __init__(self, header: bytes = b"Authorization", value: bytes | None = None) -> None:
        self.header = header
        self.value = value
        self._stripped = _ALWAYS_STRIPPED | {header.lower()}

    @classmethod
    def load(cls, config: UpstreamCredentialConfig, environ: Mapping[str, str]) -> UpstreamCredential:
        """Read the secret the config points at (``environ``: the process environment, from the CLI).

        Raises:
            ConfigError: the variable is unset or empty, the file unreadable or empty, or the value
                cannot be a header value.
        """
        header = config.header.encode("ascii")
        if not config.enabled:
            return cls(header)
        if config.env:
            secret = environ.get(config.env, "")
            if not secret:
                raise ConfigError(f"upstream_credential.env: ${config.env} is not set or empty")
            where = f"upstream_credential.env (${config.env})"
        else:
            try:
                secret = Path(config.file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"upstream_credential.file: cannot read {config.file}: {exc}") from None
            if not secret:
                raise ConfigError(f"upstream_credential.file: {config.file} is empty")
            where = "upstream_credential.file"
        if not secret.isascii() or not secret.isprintable() or secret != secret.strip():
            # RFC 9110 §5.5: no CR, LF or NUL may enter a field value (header injection).
            raise ConfigError(f"{where}: the credential must be printable ASCII without surrounding spaces")
        scheme = config.scheme
        if scheme is None:
            scheme = "Bearer" if header.lower() == b"authorization" else ""
        value = f"{scheme} {secret}" if scheme else secret
        return cls(header, value.encode("ascii"))

    def apply(self, headers: Headers) -> Headers:
        """``headers`` without any client credential, with the gateway's (if it has one) at the end."""
        out = [(name, value) for name, value in headers if name.lower() not in self._stripped]
        if self.value is not None:
            out.append((self.header, self.value))
        return out


__all__ = ["UpstreamCredential"]
