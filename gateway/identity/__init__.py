"""Who is calling: OIDC bearer tokens, service API keys, and a development IdP for demos and tests.

Building blocks only: the proxy decides where to call them and what a rejection answers.
"""

from gateway.identity.apikeys import ApiKey, verify_api_key
from gateway.identity.commands import add_commands
from gateway.identity.jwks import JwksCache, discovery_loader, file_loader
from gateway.identity.jwt_verify import KeysUnavailable, TokenRejected, TokenVerifier, VerifierConfig

__all__ = [
    "ApiKey",
    "JwksCache",
    "KeysUnavailable",
    "TokenRejected",
    "TokenVerifier",
    "VerifierConfig",
    "add_commands",
    "discovery_loader",
    "file_loader",
    "verify_api_key",
]
