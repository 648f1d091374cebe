"""The callers of the auth-on scenarios: a service API key and an OIDC JWT whose key sits in a local JWKS
file, and the gateway config sections that accept them.

Keys and tokens are made with ``benchmarks.identity``'s signer and the gateway's own API key functions,
written into the run's temporary directory. Measures nothing and starts nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jose import jwt

from benchmarks.identity import ISSUER, signer
from gateway.identity.apikeys import hash_api_key, new_api_key

AuthKind = Literal["apikey", "oidc"]
AUDIENCE = "wardgate"
GROUP = "bench"
TOKEN_TTL_S = 6 * 3600  # outlives any run


@dataclass(frozen=True)
class Callers:
    api_key: str
    api_key_hash: str
    jwt: str
    jwks_file: Path
    model_key_file: Path  # the upstream credential the gateway swaps in

    def bearer(self, kind: AuthKind) -> str:
        return self.api_key if kind == "apikey" else self.jwt

    def toml(self, kind: AuthKind) -> str:
        """Config sections: who may call (one kind), one allow rule for them, the upstream credential."""
        if kind == "apikey":
            auth = (
                f'[[auth.api_keys]]\nname = "bench-service"\nhash = "{self.api_key_hash}"\n'
                f'groups = ["{GROUP}"]\n'
            )
        else:
            auth = (
                f'[auth.oidc]\nissuer = "{ISSUER}"\njwks_file = "{self.jwks_file}"\n'
                f'audience = ["{AUDIENCE}"]\nalgorithms = ["ES256"]\n'
            )
        return (
            f"{auth}\n"
            f'[[policy.rules]]\nname = "bench-chat"\ngroups = ["{GROUP}"]\n'
            'paths = ["/v1/chat/completions"]\n\n'
            f'[upstream_credential]\nfile = "{self.model_key_file}"\n\n'
        )


def write_callers(directory: Path) -> Callers:
    """A fresh API key, a signing key in a JWKS file and a token it signed, in ``directory``."""
    public, private = signer("ES256", "bench")
    jwks_file = directory / "bench-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-user",
        "groups": [GROUP],
        "iat": now,
        "exp": now + TOKEN_TTL_S,
    }
    token = str(jwt.encode(claims, private, algorithm="ES256", headers={"kid": "bench"}))
    model_key_file = directory / "model-key"
    model_key_file.write_text("sk-bench-upstream-credential\n")
    model_key_file.chmod(0o600)
    api_key = new_api_key()
    return Callers(api_key, hash_api_key(api_key), token, jwks_file, model_key_file)
