"""The demo OIDC issuer of the local stack: one RS256 key, a discovery document and a JWKS.

`tollgate up` generates the key into the run directory and serves
`/.well-known/openid-configuration` and `/jwks.json` on loopback, which is what the
authz service's embedded default trusts (issuer `http://127.0.0.1:9999`).
`tollgate token` signs with the same key file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tollgate.devcerts import write_private

DEFAULT_PORT = 9999
AUDIENCE = "tollgate-demo"
_KEY_FILE = "issuer-signing-key.pem"
_INFO_FILE = "issuer.json"


class IssuerNotReadyError(Exception):
    """The run directory has no issuer key yet (`tollgate up` creates it)."""


@dataclass(frozen=True)
class SigningKey:
    """The issuer's private key, its key id and the issuer URL tokens carry."""

    private_key: rsa.RSAPrivateKey
    kid: str
    issuer: str
    audience: str = AUDIENCE

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with kid, use and alg."""
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return jwk


def issuer_url(port: int) -> str:
    """The issuer identifier for a demo issuer on loopback `port`."""
    return f"http://127.0.0.1:{port}"


def ensure_signing_key(run_dir: Path, issuer: str) -> SigningKey:
    """Reuse the key in `run_dir` or generate one; record the issuer for `tollgate token`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    key_path = run_dir / _KEY_FILE
    try:
        private_key = _read_key(key_path)
    except IssuerNotReadyError:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(
            key_path,
            private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    (run_dir / _INFO_FILE).write_text(json.dumps({"issuer": issuer, "audience": AUDIENCE}))
    return SigningKey(private_key, _thumbprint(private_key), issuer)


def load_signing_key(run_dir: Path) -> SigningKey:
    """The key and issuer `tollgate up` left in `run_dir`, or IssuerNotReadyError."""
    private_key = _read_key(run_dir / _KEY_FILE)
    try:
        info = json.loads((run_dir / _INFO_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise IssuerNotReadyError(f"{run_dir / _INFO_FILE}: {exc}") from None
    return SigningKey(private_key, _thumbprint(private_key), str(info["issuer"]),
                      str(info.get("audience", AUDIENCE)))


def _read_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise IssuerNotReadyError(f"{path}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise IssuerNotReadyError(f"{path}: not an RSA private key")
    return key


def _thumbprint(key: rsa.RSAPrivateKey) -> str:
    """RFC 7638 JWK thumbprint: a stable kid derived from the public key."""
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest())
    return digest.decode()


def discovery_document(issuer: str) -> dict[str, Any]:
    """The subset of OpenID Provider Metadata a resource server reads."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks.json",
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }


class DemoIssuer:
    """Serves discovery and JWKS for one SigningKey on a background thread."""

    def __init__(self, key: SigningKey, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        documents = {
            "/.well-known/openid-configuration": discovery_document(key.issuer),
            "/jwks.json": {"keys": [key.public_jwk()]},
        }
        self._server = ThreadingHTTPServer((host, port), _handler(documents))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="demo-issuer")

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def _handler(documents: dict[str, dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = documents.get(self.path)
            body = json.dumps(document if document is not None else {"error": "not_found"})
            self.send_response(200 if document is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "max-age=300")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the stack prints its own summary."""

    return Handler
