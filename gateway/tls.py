"""TLS on both sides of the gateway: the listener's reloadable server context, the upstream's client context.

Owns certificate loading, the SIGHUP swap and what a handshake tells us about the peer. It never reads
or writes application bytes; the connection handlers get a ``TlsSession`` and nothing else.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from pathlib import Path
from typing import cast

import msgspec

from gateway.config import ConfigError, ListenerConfig

logger = logging.getLogger("wardgate.tls")

ALPN_HTTP1 = "http/1.1"
ALPN_H2 = "h2"
# What a listener offers, most preferred first (STYLE §4: the parser is chosen by ALPN first).
SERVER_ALPN: tuple[str, ...] = (ALPN_H2, ALPN_HTTP1)
UPSTREAM_ALPN: tuple[str, ...] = (ALPN_HTTP1,)

# RFC 4514 §3 short names; any other attribute keeps OpenSSL's long name.
_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_SAN_PREFIXES = {"DNS": "DNS", "IP Address": "IP", "URI": "URI", "email": "email"}


class TlsPeer(msgspec.Struct, frozen=True, kw_only=True):
    """A verified client certificate, as data for the identity layer."""

    subject: str  # RFC 4514 string, most specific first: "CN=alice,OU=agents,O=Example"
    issuer: str = ""
    sans: tuple[str, ...] = ()  # "DNS:host", "IP:10.0.0.1", "URI:spiffe://...", "email:a@b"
    fingerprint_sha256: str = ""  # hex sha256 of the DER certificate
    serial: str = ""  # hex, as OpenSSL prints it


class TlsSession(msgspec.Struct, frozen=True, kw_only=True):
    """What one client connection's handshake settled."""

    version: str  # "TLSv1.3"
    cipher: str
    alpn: str = ""  # "" when the client offered no protocol we speak
    peer: TlsPeer | None = None  # only with tls_client_ca: the verified client certificate


_Name = tuple[tuple[tuple[str, str], ...], ...]


def _rfc4514(name: _Name) -> str:
    rdns = []
    for rdn in reversed(name):  # RFC 4514 §2.1: the last RDN of the sequence comes first
        rdns.append("+".join(f"{_SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = "".join("\\" + ch if ch in ',+"\\<>;' else ch for ch in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if len(value) > 1 and value.endswith(" "):
        out = out[:-1] + "\\ "
    return out


def session_of(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsSession | None:
    """The settled handshake of a connection, or None for plaintext."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    peer = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        # Only a verified certificate decodes (verify_mode CERT_REQUIRED): an unverified one is no identity.
        info = ssl_object.getpeercert()
        if info:
            # The documented shapes of getpeercert(): names are RDN tuples, SANs (kind, value) pairs.
            san_pairs = cast("tuple[tuple[str, str], ...]", info.get("subjectAltName", ()))
            peer = TlsPeer(
                subject=_rfc4514(cast("_Name", info.get("subject", ()))),
                issuer=_rfc4514(cast("_Name", info.get("issuer", ()))),
                sans=tuple(f"{_SAN_PREFIXES.get(kind, kind)}:{value}" for kind, value in san_pairs),
                fingerprint_sha256=hashlib.sha256(der).hexdigest(),
                serial=str(info.get("serialNumber", "")),
            )
    return TlsSession(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        alpn=ssl_object.selected_alpn_protocol() or "",
        peer=peer,
    )


def _no_password() -> bytes:
    # An encrypted key must not make OpenSSL prompt on the terminal (and block the loop on SIGHUP).
    return b""


def certificate_fingerprint(cert_file: Path) -> str:
    """Hex sha256 of the first certificate in a PEM file (the leaf), for logs.

    Raises:
        ConfigError: unreadable file or no PEM certificate in it.
    """
    try:
        text = cert_file.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {cert_file}: {exc}") from None
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ConfigError(f"{cert_file}: no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")])
    except ValueError as exc:
        raise ConfigError(f"{cert_file}: {exc}") from None
    return hashlib.sha256(der).hexdigest()


class ServerTls:
    """A listener's TLS termination, whose certificate can be swapped while it serves.

    The listening socket keeps the context it was created with (``context``); its SNI callback, which
    OpenSSL runs on every ClientHello (with or without SNI), moves each new handshake onto the current
    context. Established connections keep the certificate they were made with.
    """

    def __init__(self, listener: ListenerConfig, *, field: str) -> None:
        """Raises: ConfigError naming ``field`` when the certificate, key or client CA cannot be loaded."""
        self.name = listener.name
        self.cert_file = Path(listener.tls_cert)
        self.key_file = Path(listener.tls_key)
        self.client_ca_file = Path(listener.tls_client_ca) if listener.tls_client_ca else None
        self._field = field
        self._current, self.fingerprint = self._build()
        self.context = self._current
        self.reloads = 0

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def reload(self) -> str:
        """Re-read the certificate, key and client CA; new handshakes use them. Returns the fingerprint.

        Raises:
            ConfigError: the new files do not load; the previous context stays in use.
        """
        self._current, self.fingerprint = self._build()
        self.reloads += 1
        return self.fingerprint

    def _build(self) -> tuple[ssl.SSLContext, str]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the ssl module's modern cipher defaults
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # Compression invites CRIME; renegotiation (TLS 1.2) is a DoS lever and an injection risk.
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        try:
            fingerprint = certificate_fingerprint(self.cert_file)
            ctx.load_cert_chain(self.cert_file, self.key_file, password=_no_password)
        except ConfigError as exc:
            raise ConfigError(f"{self._field}.tls_cert: {exc}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{self._field}.tls_cert/tls_key: cannot load {self.cert_file} with {self.key_file}: {exc}"
            ) from None
        if self.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=self.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{self._field}.tls_client_ca: cannot load {self.client_ca_file}: {exc}"
                ) from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(list(SERVER_ALPN))
        ctx.sni_callback = self._select
        return ctx, fingerprint

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._current
        if ssl_object.context is not current:
            ssl_object.context = current


def upstream_context(
    *, ca_file: str, insecure: bool, field: str, alpn: tuple[str, ...] = UPSTREAM_ALPN
) -> ssl.SSLContext:
    """The client context for an ``https://`` upstream: verified against the system store or ``ca_file``.

    Raises:
        ConfigError: ``ca_file`` cannot be loaded.
    """
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            ctx = ssl.create_default_context(cafile=ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{field}.upstream_ca: cannot load {ca_file}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(alpn))
    return ctx


__all__ = [
    "ALPN_H2",
    "ALPN_HTTP1",
    "SERVER_ALPN",
    "UPSTREAM_ALPN",
    "ServerTls",
    "TlsPeer",
    "TlsSession",
    "certificate_fingerprint",
    "session_of",
    "upstream_context",
]
