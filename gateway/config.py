"""Typed configuration: TOML file, then command-line flags on top. Fails early with the bad field named."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec

from gateway.approvals.config import ApprovalsConfig, ApprovalsConfigError, compile_rules
from gateway.masking import MaskingConfig, MaskingConfigError, rules_by_scope
from gateway.protocols import DuplicateParser, available_parsers, protocol_problem

Durability = Literal["strict", "batched"]


class ConfigError(Exception):
    """Configuration that cannot work. The message names the field."""


class ListenerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:8080"
    upstream: str = "http://127.0.0.1:8000"
    protocol: str = "http1"  # the client-facing parser
    name: str = "default"
    durability: Durability | None = None  # this listener's mode; None: storage.durability
    tls_cert: str = ""  # PEM certificate chain: with tls_key, the listener speaks TLS (re-read on SIGHUP)
    tls_key: str = ""  # PEM private key (unencrypted)
    tls_client_ca: str = ""  # PEM CA bundle: clients must present a certificate it verifies (mTLS)
    upstream_ca: str = ""  # PEM CA bundle for an https:// upstream instead of the system store
    upstream_insecure: bool = False  # https:// upstream without certificate verification (logged loudly)
    upstream_protocol: Literal["http1", "h2"] = "http1"  # h2: multiplexed (ALPN h2 over TLS, else h2c)


class LimitsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    header_timeout_s: float = 30.0  # a request head must arrive within this (slow clients)
    idle_timeout_s: float = 75.0  # a kept-alive client connection may sit idle this long
    upstream_connect_timeout_s: float = 10.0
    upstream_read_timeout_s: float = 300.0  # longest silence from the upstream, between chunks too
    client_write_timeout_s: float = 60.0  # longest a client may leave our writes unread
    max_exchange_s: float = 3600.0  # longest response, streams included; then it is cut and recorded
    max_connections: int = 1024
    upstream_pool_size: int = 64  # idle kept-alive upstream connections kept per upstream
    shutdown_grace_s: float = 10.0  # on SIGTERM, exchanges in flight get this long to finish
    h2_max_concurrent_streams: int = 100  # SETTINGS_MAX_CONCURRENT_STREAMS; more is a PROTOCOL_ERROR
    h2_reset_burst: int = 100  # streams a client may cancel in flight before the refill rate applies
    h2_resets_per_s: float = 20.0  # beyond it: GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487)


class StorageConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./wardgate-data"
    durability: Durability = "strict"
    max_segment_bytes: int = 64 * 1024 * 1024
    group_commit_ms: float = 50.0
    max_pending_frames: int = 20_000  # beyond this, connections wait for the writer (counted)
    checkpoint_every_frames: int = 10_000  # a signed checkpoint after this many frames...
    checkpoint_interval_s: float = 5.0  # ...or this long, whichever first (only if anything was written)
    recovery_retry_s: float = 1.0  # after a failed write: first retry in a new segment
    recovery_retry_max_s: float = 10.0  # retries back off up to this


class SessionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    idle_timeout_s: float = 900.0  # 15 minutes without traffic starts a new assigned session
    max_tracked: int = 100_000


class RetentionConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_age_s: float = 0.0  # remove whole segments older than this; 0 keeps everything
    max_total_bytes: int = 0  # or beyond this total size; 0 means no budget
    interval_s: float = 3600.0  # a pass at startup and then this often


class OidcConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[auth.oidc]``: bearer JWTs from one issuer, keys by discovery or from a JWKS file."""

    issuer: str = ""  # the exact iss; its /.well-known/openid-configuration gives the JWKS unless jwks_file
    jwks_file: str = ""  # a local JWKS instead of discovery (re-read when an unknown kid appears)
    audience: list[str] = []  # the token's aud must name one of these
    algorithms: list[str] = msgspec.field(
        default_factory=lambda: ["RS256", "ES256"]
    )  # never none or HS*: refused at startup
    leeway_s: float = 30.0  # clock skew allowed on exp, nbf, iat
    groups_claim: str = "groups"  # a claim name, or a dotted path such as realm_access.roles
    required_claims: list[str] = msgspec.field(default_factory=lambda: ["exp", "iss", "aud"])  # and sub
    jwks_refetch_interval_s: float = 30.0  # an unknown kid refetches the keys at most this often
    jwks_max_age_s: float = 3600.0  # keys are refreshed at least this often


class ApiKeyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[[auth.api_keys]]``: a service identity; made by ``wardgate apikey new`` (only the hash is kept)."""

    name: str
    hash: str  # sha256:<64 hex>
    groups: list[str] = []


class MtlsIdentityConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[[auth.mtls]]``: a verified client certificate subject (RFC 4514) that is a service identity."""

    subject: str  # exactly as recorded in tls_peer_subject, e.g. "CN=build-agent,O=Example"
    name: str  # the identity's subject
    groups: list[str] = []


class AuthConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Who may call. With any of these configured, every request must authenticate (else 401)."""

    oidc: OidcConfig | None = None
    api_keys: list[ApiKeyConfig] = []
    mtls: list[MtlsIdentityConfig] = []

    @property
    def enabled(self) -> bool:
        return self.oidc is not None or bool(self.api_keys) or bool(self.mtls)


class PolicyRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[[policy.rules]]``: applies to a request whose caller is in ``groups`` or ``users`` (empty: anyone).

    An allow rule allows a request matching all of its paths, methods and models (globs; empty: any)
    within its limits; a deny rule denies a request matching them. Deny wins over allow.
    """

    name: str
    effect: Literal["allow", "deny"] = "allow"
    groups: list[str] = []
    users: list[str] = []  # subjects or e-mail addresses
    paths: list[str] = []
    methods: list[str] = []
    models: list[str] = []
    max_body_bytes: int = 0  # 0: no limit of its own
    max_tokens: int = 0  # the request's max_tokens (or max_completion_tokens, max_output_tokens); 0: none


class PolicyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    rules: list[PolicyRule] = []


class UpstreamCredentialConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[upstream_credential]``: the model's key, held by the gateway. Never written in this file."""

    env: str = ""  # the environment variable holding it...
    file: str = ""  # ...or a file holding it (trailing newline ignored)
    header: str = "Authorization"  # or e.g. "api-key" (Azure OpenAI)
    scheme: str | None = None  # None: "Bearer" for Authorization, nothing for other headers

    @property
    def enabled(self) -> bool:
        return bool(self.env or self.file)


class AdminConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:9900"  # health, metrics, the console API and UI; "" turns the listener off
    # may read everything recorded (every look is recorded too)
    auditor_groups: list[str] = msgspec.field(default_factory=lambda: ["auditors"])
    approver_groups: list[str] = msgspec.field(default_factory=lambda: ["approvers"])  # decide held calls
    metrics_groups: list[str] = msgspec.field(default_factory=lambda: ["metrics"])  # scrape /metrics
    public_metrics: bool = False  # /metrics without credentials
    tls_cert: str = ""  # PEM certificate chain: with tls_key, the admin listener speaks TLS
    tls_key: str = ""


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    listeners: list[ListenerConfig] = msgspec.field(default_factory=lambda: [ListenerConfig()])
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    sessions: SessionConfig = msgspec.field(default_factory=SessionConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    upstream_credential: UpstreamCredentialConfig = msgspec.field(default_factory=UpstreamCredentialConfig)
    masking: MaskingConfig = msgspec.field(default_factory=MaskingConfig)
    approvals: ApprovalsConfig = msgspec.field(default_factory=ApprovalsConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)


def split_host_port(value: str, *, field: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) to a pair.

    Raises:
        ConfigError: not of that form.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ConfigError(f"{field}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


_DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamUrl(NamedTuple):
    scheme: str  # "http" or "https"
    host: str  # without brackets
    port: int
    prefix: str  # path prefix, "" or "/openai"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The ``Host`` the upstream expects (RFC 9110 §7.2: the port only when not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_upstream(value: str, *, field: str) -> UpstreamUrl:
    """``http[s]://host[:port][/prefix]`` to its parts (default ports 80 and 443).

    Raises:
        ConfigError: not an http:// or https:// URL.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        raise ConfigError(f"{field}: expected http://HOST:PORT or https://HOST:PORT, got {value!r}")
    authority, _, path = rest.partition("/")
    if ":" in authority.rsplit("]", 1)[-1]:
        host, port = split_host_port(authority, field=field)
    else:
        host, port = authority.strip("[]"), _DEFAULT_PORTS[scheme]
    if not host:
        raise ConfigError(f"{field}: missing host in {value!r}")
    return UpstreamUrl(scheme, host, port, "/" + path.rstrip("/") if path else "")


def _check_tls(listener: ListenerConfig, field: str) -> None:
    if bool(listener.tls_cert) != bool(listener.tls_key):
        raise ConfigError(f"{field}.tls_cert: tls_cert and tls_key go together (one is missing)")
    if listener.tls_client_ca and not listener.tls_cert:
        raise ConfigError(f"{field}.tls_client_ca: client certificates need TLS (set tls_cert and tls_key)")
    if not parse_upstream(listener.upstream, field=f"{field}.upstream").tls:
        for name in ("upstream_ca", "upstream_insecure"):
            if getattr(listener, name):
                raise ConfigError(f"{field}.{name}: applies to https:// upstreams only")
    if listener.upstream_ca and listener.upstream_insecure:
        raise ConfigError(f"{field}.upstream_insecure: contradicts upstream_ca (verify against it, or not)")


# The names the gateway gives its own verdicts (gateway.identity.policy, gateway.identity.access).
RESERVED_RULE_NAMES = frozenset({"default-deny", "path-normal-form", "uncheckable-body", "authentication"})
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2: a header field name


def _unique(names: list[str], field: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise ConfigError(f"{field}[{i}]: must not be empty")
        if name in seen:
            raise ConfigError(f"{field}[{i}]: {name!r} appears twice")
        seen.add(name)


def _check_auth(config: Config) -> None:
    auth, policy, credential = config.auth, config.policy, config.upstream_credential
    if auth.oidc is not None:
        oidc = auth.oidc
        if not oidc.issuer:
            raise ConfigError("auth.oidc.issuer: required (the exact iss of the tokens)")
        if not oidc.groups_claim:
            raise ConfigError("auth.oidc.groups_claim: must not be empty")
        for name in ("jwks_refetch_interval_s", "jwks_max_age_s"):
            if getattr(oidc, name) <= 0:
                raise ConfigError(f"auth.oidc.{name}: must be positive")
    for i, key in enumerate(auth.api_keys):
        if not _HASH.fullmatch(key.hash):
            raise ConfigError(
                f"auth.api_keys[{i}].hash: expected sha256:<64 hex> (from `wardgate apikey new`), "
                "never the key itself"
            )
    _unique([key.name for key in auth.api_keys], "auth.api_keys.name")
    _unique([entry.subject for entry in auth.mtls], "auth.mtls.subject")
    if auth.mtls and not any(listener.tls_client_ca for listener in config.listeners):
        raise ConfigError("auth.mtls: client certificates need a listener with tls_client_ca")
    _unique([rule.name for rule in policy.rules], "policy.rules.name")
    for i, rule in enumerate(policy.rules):
        field = f"policy.rules[{i}]"
        if rule.name in RESERVED_RULE_NAMES:
            raise ConfigError(f"{field}.name: {rule.name!r} is reserved for the gateway's own verdicts")
        for method in rule.methods:
            if method != method.upper() or not _TOKEN.fullmatch(method):
                raise ConfigError(f"{field}.methods: expected upper-case method names, got {method!r}")
        for name in ("max_body_bytes", "max_tokens"):
            if getattr(rule, name) < 0:
                raise ConfigError(f"{field}.{name}: must be 0 (no limit) or positive")
        if rule.effect == "deny" and (rule.max_body_bytes or rule.max_tokens):
            raise ConfigError(f"{field}: limits belong on allow rules (a deny rule denies what it matches)")
    if credential.env and credential.file:
        raise ConfigError("upstream_credential: set env or file, not both")
    if not _TOKEN.fullmatch(credential.header):
        raise ConfigError(f"upstream_credential.header: not a header name: {credential.header!r}")


def validate(config: Config) -> Config:
    """Check what the types alone cannot. Raises ConfigError naming the field."""
    if not config.listeners:
        raise ConfigError("listeners: at least one listener is required")
    try:
        parsers = available_parsers()
    except DuplicateParser as exc:
        raise ConfigError(str(exc)) from None
    for i, listener in enumerate(config.listeners):
        problem = protocol_problem(listener.protocol, parsers)
        if problem:
            raise ConfigError(f"listeners[{i}].protocol: {problem}")
        split_host_port(listener.listen, field=f"listeners[{i}].listen")
        parse_upstream(listener.upstream, field=f"listeners[{i}].upstream")
        _check_tls(listener, f"listeners[{i}]")
    for name in msgspec.structs.fields(LimitsConfig):
        value = getattr(config.limits, name.name)
        if value <= 0:
            raise ConfigError(f"limits.{name.name}: must be positive, got {value}")
    if config.admin.listen:
        split_host_port(config.admin.listen, field="admin.listen")
    if bool(config.admin.tls_cert) != bool(config.admin.tls_key):
        raise ConfigError("admin.tls_cert: tls_cert and tls_key go together (one is missing)")
    if config.storage.max_segment_bytes < 4096:
        raise ConfigError("storage.max_segment_bytes: must be at least 4096")
    if config.storage.group_commit_ms <= 0:
        raise ConfigError("storage.group_commit_ms: must be positive")
    _check_auth(config)
    try:
        rules_by_scope(config.masking)
    except MaskingConfigError as exc:
        raise ConfigError(str(exc)) from None
    try:
        compile_rules(config.approvals, config.admin.approver_groups)
    except ApprovalsConfigError as exc:
        raise ConfigError(str(exc)) from None
    return config


def load(path: Path | None) -> Config:
    """Read a TOML config file (or the defaults when ``path`` is None).

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or mistyped field.
    """
    if path is None:
        return Config()
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def apply_flags(config: Config, args: argparse.Namespace) -> Config:
    """Flags override the file: they apply to the first listener and to storage."""
    listener = config.listeners[0] if config.listeners else ListenerConfig()
    listener = msgspec.structs.replace(
        listener,
        listen=args.listen or listener.listen,
        upstream=args.upstream or listener.upstream,
        tls_cert=args.tls_cert or listener.tls_cert,
        tls_key=args.tls_key or listener.tls_key,
        tls_client_ca=args.tls_client_ca or listener.tls_client_ca,
    )
    storage = msgspec.structs.replace(
        config.storage,
        data_dir=args.data_dir or config.storage.data_dir,
        durability=args.durability or config.storage.durability,
    )
    credential = config.upstream_credential
    for flag in ("env", "file", "header"):
        value = getattr(args, f"upstream_credential_{flag}", None)
        if value:
            credential = msgspec.structs.replace(credential, **{flag: value})
    admin = config.admin
    if args.admin_listen is not None:
        admin = msgspec.structs.replace(admin, listen=args.admin_listen)
    return msgspec.structs.replace(
        config,
        listeners=[listener, *config.listeners[1:]],
        storage=storage,
        admin=admin,
        upstream_credential=credential,
    )


__all__ = [
    "AdminConfig",
    "ApiKeyConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "Durability",
    "LimitsConfig",
    "ListenerConfig",
    "MtlsIdentityConfig",
    "OidcConfig",
    "PolicyConfig",
    "PolicyRule",
    "RetentionConfig",
    "SessionConfig",
    "StorageConfig",
    "UpstreamCredentialConfig",
    "UpstreamUrl",
    "apply_flags",
    "load",
    "parse_upstream",
    "split_host_port",
    "validate",
]
